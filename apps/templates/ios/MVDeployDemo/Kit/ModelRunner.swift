import CoreGraphics
import CoreML
import Foundation

public enum ModelRunnerError: Error { case missingResource(String), noOutput }

/// Runs the bundled Core ML model: photos resized and cropped by Preprocessing.swift (bundle.json's resize,
/// the one mvdeploy checked), golden images directly. Vision's own scaling is not used: it is another resize.
public final class ModelRunner {
    public let model: MLModel
    public let labels: [String]

    public init(bundle: Bundle = .main) throws {
        guard let url = bundle.url(forResource: BundleSpec.modelResource, withExtension: "mlmodelc") else {
            throw ModelRunnerError.missingResource(BundleSpec.modelResource + ".mlmodelc")
        }
        model = try MLModel(contentsOf: url)
        guard let labelsURL = bundle.url(forResource: "labels", withExtension: "txt") else {
            throw ModelRunnerError.missingResource("labels.txt")
        }
        labels = try String(contentsOf: labelsURL, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// A photo of any size: its RGBA pixels resized and center-cropped by Preprocessing, then fed as is.
    public func logits(photo: CGImage) throws -> [Float] {
        let (width, height) = (photo.width, photo.height)
        var rgba = [UInt8](repeating: 0, count: width * height * 4)
        let drawn = rgba.withUnsafeMutableBytes { raw -> Bool in
            guard let context = CGContext(data: raw.baseAddress, width: width, height: height, bitsPerComponent: 8,
                                          bytesPerRow: width * 4, space: CGColorSpace(name: CGColorSpace.sRGB)!,
                                          bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            context.draw(photo, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        guard drawn else { throw ModelRunnerError.noOutput }
        return try logits(exactImage: Self.image(Preprocessing.toInput(rgba, width: width, height: height),
                                                 side: BundleSpec.crop))
    }

    /// side x side RGBA pixels as a CGImage (no interpolation when it is drawn at its size).
    static func image(_ rgba: [UInt8], side: Int) -> CGImage {
        CGImage(width: side, height: side, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: side * 4,
                space: CGColorSpace(name: CGColorSpace.sRGB)!,
                bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                provider: CGDataProvider(data: Data(rgba) as CFData)!, decode: nil, shouldInterpolate: false,
                intent: .defaultIntent)!
    }

    /// An image already at the input size (the golden images): fed as is, no resampling.
    public func logits(exactImage: CGImage) throws -> [Float] {
        let constraint = model.modelDescription.inputDescriptionsByName[BundleSpec.inputName]!.imageConstraint!
        let value = try MLFeatureValue(cgImage: exactImage, constraint: constraint, options: nil)
        let input = try MLDictionaryFeatureProvider(dictionary: [BundleSpec.inputName: value])
        guard let array = try model.prediction(from: input).featureValue(for: BundleSpec.outputName)?.multiArrayValue
        else { throw ModelRunnerError.noOutput }
        return Self.floats(array)
    }

    public func top5(_ logits: [Float]) -> [(label: String, probability: Float)] {
        let maxLogit = logits.max() ?? 0
        let e = logits.map { expf($0 - maxLogit) }
        let sum = e.reduce(0, +)
        return e.indices.sorted { e[$0] > e[$1] }.prefix(5).map { (labels[$0], e[$0] / sum) }
    }

    static func floats(_ array: MLMultiArray) -> [Float] {
        (0..<array.count).map { array[$0].floatValue }
    }
}
