import MVDeployKit
import PhotosUI
import SwiftUI

/// Pick a photo -> top-5 classes; "Self-test" -> golden images against bundle.json's tolerance.
@main
struct MVDeployDemoApp: App {
    var body: some Scene { WindowGroup { ContentView() } }
}

struct ContentView: View {
    @State private var item: PhotosPickerItem?
    @State private var lines: [String] = ["{{MODEL_NAME}} ({{PRECISION}})"]
    private let runner = try? ModelRunner()

    var body: some View {
        VStack(alignment: .leading, spacing: 12) {
            PhotosPicker("Choose a photo", selection: $item, matching: .images)
            Button("Self-test") {
                lines = runner.map { SelfTest.run($0) } ?? ["model failed to load"]
            }
            ForEach(lines, id: \.self) { Text($0).font(.system(.body, design: .monospaced)) }
            Spacer()
        }
        .padding()
        .onChange(of: item) { newItem in
            Task {
                guard let runner, let data = try? await newItem?.loadTransferable(type: Data.self),
                      let image = UIImage(data: data)?.cgImage,
                      let logits = try? runner.logits(photo: image) else { return }
                lines = runner.top5(logits).map { String(format: "%-16@ %.3f", $0.label, $0.probability) }
            }
        }
    }
}
