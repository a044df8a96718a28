package dev.mvdeploy.demo

/**
 * The bundle's preprocessing in pure Kotlin (no android.* import): what mvdeploy checked the model with,
 * bundle.json's "preprocessing", step for step. Pixels in (ARGB, as Bitmap.getPixels gives them), the
 * model's input out. mvdeploy compiles this file and runs it on the JVM against its own tensors.
 *
 * The resize is Pillow's bicubic (Image.resize(..., BICUBIC)), reproduced exactly: a cubic kernel (a = -0.5)
 * whose support widens by the downscale factor (antialiasing), a horizontal pass then a vertical one, each
 * with Pillow's 22-bit fixed-point weights and rounded to 8 bits. The shorter side goes to RESIZE (the
 * other side rounded half to even, at least CROP), then a center crop (offsets rounded down).
 */
object Preprocessing {
    private const val PRECISION_BITS = 22                 // Pillow's fixed-point weights
    private const val KERNEL_A = -0.5                     // Pillow's bicubic
    private const val KERNEL_SUPPORT = 2.0

    /** w x h ARGB pixels -> the model's input (RESIZE, CROP, [0, 1], mean/std, the model's layout). */
    fun toInput(argb: IntArray, width: Int, height: Int): FloatArray {
        val (w, h) = resizedSize(width, height)
        val resized = resize(argb, width, height, w, h)
        val left = (w - BundleSpec.CROP) / 2
        val top = (h - BundleSpec.CROP) / 2
        val crop = IntArray(BundleSpec.CROP * BundleSpec.CROP)
        for (y in 0 until BundleSpec.CROP) {
            System.arraycopy(resized, (top + y) * w + left, crop, y * BundleSpec.CROP, BundleSpec.CROP)
        }
        return normalize(crop)
    }

    /** The size the shorter side goes to RESIZE at: Python's round (half to even), at least CROP. */
    fun resizedSize(width: Int, height: Int): Pair<Int, Int> {
        val scale = BundleSpec.RESIZE.toDouble() / minOf(width, height)
        return Pair(maxOf(BundleSpec.CROP, Math.rint(width * scale).toInt()),
                    maxOf(BundleSpec.CROP, Math.rint(height * scale).toInt()))
    }

    /** CROP x CROP ARGB pixels -> scaled to [0, 1], minus mean, over std, in the model's layout (RGB). */
    fun normalize(argb: IntArray): FloatArray {
        val area = BundleSpec.CROP * BundleSpec.CROP
        val out = FloatArray(3 * area)
        for (i in 0 until area) {
            for (c in 0 until 3) {
                val channel = (argb[i] shr (16 - 8 * c)) and 0xFF            // R, G, B
                val v = (channel.toFloat() / 255f - BundleSpec.MEAN[c]) / BundleSpec.STD[c]
                if (BundleSpec.NHWC) out[i * 3 + c] = v else out[c * area + i] = v
            }
        }
        return out
    }

    /** Pillow's bicubic resize of ARGB pixels (alpha dropped): horizontal pass, then vertical. */
    fun resize(argb: IntArray, width: Int, height: Int, outWidth: Int, outHeight: Int): IntArray {
        var pixels = argb
        var w = width
        if (outWidth != width) {
            val weights = weights(width, outWidth)
            val out = IntArray(outWidth * height)
            for (y in 0 until height) {
                for (x in 0 until outWidth) out[y * outWidth + x] = weigh(pixels, weights[x], y * w, 1)
            }
            pixels = out
            w = outWidth
        }
        if (outHeight != height) {
            val weights = weights(height, outHeight)
            val out = IntArray(w * outHeight)
            for (y in 0 until outHeight) {
                for (x in 0 until w) out[y * w + x] = weigh(pixels, weights[y], x, w)
            }
            pixels = out
        }
        return pixels
    }

    private class Taps(val first: Int, val weights: IntArray)

    /** Each output position's first input index and fixed-point weights (Pillow's precompute_coeffs). */
    private fun weights(inSize: Int, outSize: Int): Array<Taps> {
        val scale = inSize.toDouble() / outSize
        val filterScale = maxOf(scale, 1.0)
        val support = KERNEL_SUPPORT * filterScale
        return Array(outSize) { i ->
            val center = (i + 0.5) * scale
            val first = maxOf((center - support + 0.5).toInt(), 0)
            val count = minOf((center + support + 0.5).toInt(), inSize) - first
            val k = DoubleArray(count) { cubic((it + first - center + 0.5) / filterScale) }
            val total = k.sum()
            Taps(first, IntArray(count) {
                val v = if (total != 0.0) k[it] / total else k[it]
                (if (v < 0) -0.5 + v * (1 shl PRECISION_BITS) else 0.5 + v * (1 shl PRECISION_BITS)).toInt()
            })
        }
    }

    private fun cubic(t: Double): Double {
        val x = Math.abs(t)
        return when {
            x < 1.0 -> ((KERNEL_A + 2) * x - (KERNEL_A + 3)) * x * x + 1
            x < 2.0 -> (((x - 5) * x + 8) * x - 4) * KERNEL_A
            else -> 0.0
        }
    }

    /** One output pixel: the weighted taps (start + (first + j) * stride), each channel rounded to 8 bits. */
    private fun weigh(pixels: IntArray, taps: Taps, start: Int, stride: Int): Int {
        var rgb = 0xFF shl 24
        for (shift in intArrayOf(16, 8, 0)) {
            var sum = 1L shl (PRECISION_BITS - 1)
            for (j in taps.weights.indices) {
                sum += ((pixels[start + (taps.first + j) * stride] shr shift) and 0xFF).toLong() * taps.weights[j]
            }
            rgb = rgb or ((sum shr PRECISION_BITS).toInt().coerceIn(0, 255) shl shift)
        }
        return rgb
    }
}
