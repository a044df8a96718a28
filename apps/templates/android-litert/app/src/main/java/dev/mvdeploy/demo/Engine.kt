package dev.mvdeploy.demo

import android.content.Context
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.math.roundToInt

/** The bundled .tflite on the LiteRT interpreter (XNNPACK on CPU), 2 threads as on the host. */
class Engine(context: Context) : AutoCloseable {
    private val interpreter = Interpreter(mapAsset(context, BundleSpec.MODEL_ASSET), Interpreter.Options().setNumThreads(2))

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

    override fun close() = interpreter.close()

    private fun mapAsset(context: Context, name: String): MappedByteBuffer {
        val fd = context.assets.openFd(name)
        FileInputStream(fd.fileDescriptor).channel.use {
            return it.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }
}
