import CoreGraphics
import Foundation
import ImageIO

/// Runs the golden images from the bundle (the last one a photo, through Preprocessing.swift's resize) and compares with the expected logits in bundle.json's tolerance;
/// writes the logits to Documents/device_outputs.json for `mvdeploy verify --device-outputs`.
public enum SelfTest {
    public static let deviceOutputs = "device_outputs.json"

    public static func run(_ runner: ModelRunner, bundle: Bundle = .main) -> [String] {
        var lines: [String] = []
        var cases: [String] = []
        var failed = 0
        for i in 0..<BundleSpec.goldenCount {
            let name = String(format: "%03d", i)
            do {
                guard let imageURL = bundle.url(forResource: name, withExtension: "png", subdirectory: "golden"),
                      let source = CGImageSourceCreateWithURL(imageURL as CFURL, nil),
                      let image = CGImageSourceCreateImageAtIndex(source, 0, nil),
                      let expectedURL = bundle.url(forResource: name + "_expected", withExtension: "f32", subdirectory: "golden")
                else { throw ModelRunnerError.missingResource("golden/\(name)") }
                let expected = try readFloats(expectedURL)
                let exact = image.width == BundleSpec.crop && image.height == BundleSpec.crop
                let got = try exact ? runner.logits(exactImage: image) : runner.logits(photo: image)   // the photo: resized
                cases.append("{\"image\": \"golden/\(name).png\", \"logits\": [\(got.map(jsonNumber).joined(separator: ", "))]}")
                let scale = max(expected.map { abs($0) }.max() ?? 0, 1e-12)
                let rel = zip(got, expected).map { abs($0 - $1) }.max()! / scale
                let top1 = got.firstIndex(of: got.max()!) == expected.firstIndex(of: expected.max()!)
                let ok = rel <= BundleSpec.selfTestMaxRel && top1
                if !ok { failed += 1 }
                lines.append(String(format: "golden %@: max_rel %.2e top-1 %@ %@", name, rel, top1 ? "agrees" : "DIFFERS", ok ? "ok" : "FAIL"))
            } catch {
                failed += 1
                lines.append("golden \(name): \(error)")
            }
        }
        lines.append(failed == 0 ? "self-test PASSED (\(BundleSpec.goldenCount) cases)"
                                 : "self-test FAILED (\(failed) of \(BundleSpec.goldenCount))")
        // Simulator: xcrun simctl get_app_container booted <app id> data; device: Xcode > Devices > Download Container
        let url = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0].appendingPathComponent(deviceOutputs)
        let json = "{\"device\": \"\(ProcessInfo.processInfo.operatingSystemVersionString)\", \"cases\": [\n  "
            + cases.joined(separator: ",\n  ") + "\n]}\n"
        do {
            try json.write(to: url, atomically: true, encoding: .utf8)
            lines.append("logits written to \(url.path)")
        } catch {
            lines.append("could not write \(url.path): \(error)")
        }
        return lines
    }

    /// A JSON number as Python's json module reads it (NaN and Infinity included, so a broken run still reports).
    static func jsonNumber(_ value: Float) -> String {
        value.isNaN ? "NaN" : value.isInfinite ? (value > 0 ? "Infinity" : "-Infinity") : "\(value)"
    }

    static func readFloats(_ url: URL) throws -> [Float] {
        let data = try Data(contentsOf: url)
        return data.withUnsafeBytes { raw in
            (0..<data.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.load(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }
}
