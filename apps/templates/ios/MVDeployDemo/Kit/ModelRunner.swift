import CoreGraphics
import CoreML
import Foundation
import Vision

public enum ModelRunnerError: Error { case missingResource(String), noOutput }

/// Runs the bundled Core ML model: photos through Vision (center crop), golden images directly.
public final class ModelRunner {
    public let model: MLModel
    public let labels: [String]
    private let vision: VNCoreMLModel

    public init(bundle: Bundle = .main) throws {
        guard let url = bundle.url(forResource: BundleSpec.modelResource, withExtension: "mlmodelc") else {
            throw ModelRunnerError.missingResource(BundleSpec.modelResource + ".mlmodelc")
        }
        model = try MLModel(contentsOf: url)
        vision = try VNCoreMLModel(for: model)
        guard let labelsURL = bundle.url(forResource: "labels", withExtension: "txt") else {
            throw ModelRunnerError.missingResource("labels.txt")
        }
        labels = try String(contentsOf: labelsURL, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// A photo of any size: Vision resizes and center-crops to the model's input.
    public func logits(photo: CGImage) throws -> [Float] {
        let request = VNCoreMLRequest(model: vision)
        request.imageCropAndScaleOption = .centerCrop
        try VNImageRequestHandler(cgImage: photo).perform([request])
        guard let observation = request.results?.first as? VNCoreMLFeatureValueObservation,
              let array = observation.featureValue.multiArrayValue else { throw ModelRunnerError.noOutput }
        return Self.floats(array)
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
