package dev.mvdeploy.demo

import android.content.Context
import android.graphics.Bitmap
import kotlin.math.exp
import kotlin.math.roundToInt

/** The bundle's preprocessing and top-5 around the model's runtime (Engine.kt: LiteRT or ExecuTorch). */
class Classifier(context: Context) : AutoCloseable {
    private val engine = Engine(context)
    val labels: List<String> = context.assets.open("labels.txt").bufferedReader().readLines()

    /** Resize the shorter side, center-crop, scale to [0, 1], subtract mean, divide by std. */
    fun preprocess(bitmap: Bitmap): FloatArray {
        val scale = BundleSpec.RESIZE.toFloat() / minOf(bitmap.width, bitmap.height)
        val resized = Bitmap.createScaledBitmap(bitmap, (bitmap.width * scale).roundToInt().coerceAtLeast(BundleSpec.CROP),
            (bitmap.height * scale).roundToInt().coerceAtLeast(BundleSpec.CROP), true)
        val left = (resized.width - BundleSpec.CROP) / 2
        val top = (resized.height - BundleSpec.CROP) / 2
        return toInput(Bitmap.createBitmap(resized, left, top, BundleSpec.CROP, BundleSpec.CROP))
    }

    /** A CROP x CROP image (a cropped photo, or a golden image as is): scale, mean/std, the model's layout. */
    fun toInput(square: Bitmap): FloatArray {
        val side = BundleSpec.CROP
        val pixels = IntArray(side * side)
        square.getPixels(pixels, 0, side, 0, 0, side, side)
        val out = FloatArray(3 * side * side)
        for (i in pixels.indices) {
            val rgb = floatArrayOf(((pixels[i] shr 16) and 0xFF) / 255f, ((pixels[i] shr 8) and 0xFF) / 255f, (pixels[i] and 0xFF) / 255f)
            for (c in 0 until 3) {
                val v = (rgb[c] - BundleSpec.MEAN[c]) / BundleSpec.STD[c]
                if (BundleSpec.NHWC) out[i * 3 + c] = v else out[c * side * side + i] = v
            }
        }
        return out
    }

    /** One preprocessed input (in the model's layout) -> logits, on the bundle's runtime (Engine.kt). */
    fun run(input: FloatArray): FloatArray = engine.run(input)

    fun top5(logits: FloatArray): List<Pair<String, Float>> {
        val max = logits.max()
        val e = logits.map { exp(it - max) }
        val sum = e.sum()
        return e.indices.sortedByDescending { e[it] }.take(5).map { labels[it] to e[it] / sum }
    }

    override fun close() = engine.close()
}
