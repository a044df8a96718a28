package dev.mvdeploy.demo

import android.content.Context
import android.graphics.Bitmap
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.math.exp
import kotlin.math.roundToInt

/** Runs the bundled .tflite on the LiteRT interpreter with the bundle's preprocessing. */
class Classifier(context: Context) : AutoCloseable {
    private val interpreter = Interpreter(mapAsset(context, BundleSpec.MODEL_ASSET), Interpreter.Options().setNumThreads(2))
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

    /** One preprocessed input (in the model's layout) -> logits; integer I/O is (de)quantized here. */
    fun run(input: FloatArray): FloatArray {
        val inBuf: ByteBuffer
        if (BundleSpec.INPUT_SCALE != 0f) {
            inBuf = ByteBuffer.allocateDirect(input.size).order(ByteOrder.nativeOrder())
            for (v in input) inBuf.put((v / BundleSpec.INPUT_SCALE + BundleSpec.INPUT_ZERO_POINT).roundToInt().coerceIn(-128, 127).toByte())
        } else {
            inBuf = ByteBuffer.allocateDirect(4 * input.size).order(ByteOrder.nativeOrder())
            inBuf.asFloatBuffer().put(input)
        }
        inBuf.rewind()
        val logits = FloatArray(BundleSpec.NUM_CLASSES)
        if (BundleSpec.OUTPUT_SCALE != 0f) {
            val q = Array(1) { ByteArray(BundleSpec.NUM_CLASSES) }
            interpreter.run(inBuf, q)
            for (k in logits.indices) logits[k] = (q[0][k] - BundleSpec.OUTPUT_ZERO_POINT) * BundleSpec.OUTPUT_SCALE
        } else {
            val out = Array(1) { FloatArray(BundleSpec.NUM_CLASSES) }
            interpreter.run(inBuf, out)
            out[0].copyInto(logits)
        }
        return logits
    }

    fun top5(logits: FloatArray): List<Pair<String, Float>> {
        val max = logits.max()
        val e = logits.map { exp(it - max) }
        val sum = e.sum()
        return e.indices.sortedByDescending { e[it] }.take(5).map { labels[it] to e[it] / sum }
    }

    override fun close() = interpreter.close()

    private fun mapAsset(context: Context, name: String): MappedByteBuffer {
        val fd = context.assets.openFd(name)
        FileInputStream(fd.fileDescriptor).channel.use {
            return it.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }
}
