import Foundation

/// The bundle's resize and center crop in plain Swift, step for step the Android app's Preprocessing.kt (a
/// test holds the two to the same constants and steps; the Kotlin one is compiled and run against mvdeploy's
/// own tensors). Pixels in (RGBA, 8 bits per channel, row by row), the CROP x CROP RGBA pixels the model's
/// image input takes out; the model's scale and mean/std are inside the Core ML file.
///
/// The resize is Pillow's bicubic (Image.resize(..., BICUBIC)), reproduced exactly: a cubic kernel (a = -0.5)
/// whose support widens by the downscale factor (antialiasing), a horizontal pass then a vertical one, each
/// with Pillow's 22-bit fixed-point weights and rounded to 8 bits. The shorter side goes to RESIZE (the
/// other side rounded half to even, at least CROP), then a center crop (offsets rounded down).
public enum Preprocessing {
    static let precisionBits = 22                   // Pillow's fixed-point weights
    static let kernelA = -0.5                       // Pillow's bicubic
    static let kernelSupport = 2.0

    /// width x height RGBA pixels -> CROP x CROP RGBA pixels (resized, center-cropped).
    public static func toInput(_ rgba: [UInt8], width: Int, height: Int) -> [UInt8] {
        let (w, h) = resizedSize(width: width, height: height)
        let resized = resize(rgba, width: width, height: height, outWidth: w, outHeight: h)
        let left = (w - BundleSpec.crop) / 2
        let top = (h - BundleSpec.crop) / 2
        var crop = [UInt8](repeating: 255, count: BundleSpec.crop * BundleSpec.crop * 4)
        for y in 0..<BundleSpec.crop {
            let from = ((top + y) * w + left) * 4
            crop.replaceSubrange(y * BundleSpec.crop * 4..<(y + 1) * BundleSpec.crop * 4,
                                 with: resized[from..<from + BundleSpec.crop * 4])
        }
        return crop
    }

    /// The size the shorter side goes to RESIZE at: Python's round (half to even), at least CROP.
    public static func resizedSize(width: Int, height: Int) -> (Int, Int) {
        let scale = Double(BundleSpec.resize) / Double(min(width, height))
        return (max(BundleSpec.crop, Int((Double(width) * scale).rounded(.toNearestOrEven))),
                max(BundleSpec.crop, Int((Double(height) * scale).rounded(.toNearestOrEven))))
    }

    /// Pillow's bicubic resize of RGBA pixels (alpha set opaque): horizontal pass, then vertical.
    public static func resize(_ rgba: [UInt8], width: Int, height: Int, outWidth: Int, outHeight: Int) -> [UInt8] {
        var pixels = rgba
        var w = width
        if outWidth != width {
            let taps = weights(inSize: width, outSize: outWidth)
            var out = [UInt8](repeating: 255, count: outWidth * height * 4)
            for y in 0..<height {
                for x in 0..<outWidth { weigh(pixels, taps[x], start: y * w, stride: 1, into: &out, at: y * outWidth + x) }
            }
            pixels = out
            w = outWidth
        }
        if outHeight != height {
            let taps = weights(inSize: height, outSize: outHeight)
            var out = [UInt8](repeating: 255, count: w * outHeight * 4)
            for y in 0..<outHeight {
                for x in 0..<w { weigh(pixels, taps[y], start: x, stride: w, into: &out, at: y * w + x) }
            }
            pixels = out
        }
        return pixels
    }

    struct Taps { let first: Int; let weights: [Int] }

    /// Each output position's first input index and fixed-point weights (Pillow's precompute_coeffs).
    static func weights(inSize: Int, outSize: Int) -> [Taps] {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = kernelSupport * filterScale
        return (0..<outSize).map { i in
            let center = (Double(i) + 0.5) * scale
            let first = max(Int(center - support + 0.5), 0)
            let count = min(Int(center + support + 0.5), inSize) - first
            let k = (0..<count).map { cubic((Double($0 + first) - center + 0.5) / filterScale) }
            let total = k.reduce(0, +)
            return Taps(first: first, weights: k.map {
                let v = total != 0 ? $0 / total : $0
                return Int(v < 0 ? -0.5 + v * Double(1 << precisionBits) : 0.5 + v * Double(1 << precisionBits))
            })
        }
    }

    static func cubic(_ t: Double) -> Double {
        let x = abs(t)
        if x < 1.0 { return ((kernelA + 2) * x - (kernelA + 3)) * x * x + 1 }
        if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * kernelA }
        return 0.0
    }

    /// One output pixel: the weighted taps (start + (first + j) * stride), each channel rounded to 8 bits.
    static func weigh(_ pixels: [UInt8], _ taps: Taps, start: Int, stride: Int, into out: inout [UInt8], at index: Int) {
        for channel in 0..<3 {                                                   // R, G, B
            var sum = 1 << (precisionBits - 1)
            for j in taps.weights.indices {
                sum += Int(pixels[(start + (taps.first + j) * stride) * 4 + channel]) * taps.weights[j]
            }
            out[index * 4 + channel] = UInt8(min(max(sum >> precisionBits, 0), 255))
        }
    }
}
