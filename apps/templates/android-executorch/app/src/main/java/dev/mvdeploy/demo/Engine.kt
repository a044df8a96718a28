package dev.mvdeploy.demo

import android.content.Context
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File

/**
 * The bundled .pte on the ExecuTorch runtime (XNNPACK delegate inside the program, portable kernels
 * for the rest). Module.load takes a file path, so the asset is copied to the app's files once.
 * The .pte takes a float32 NCHW tensor and returns float32 logits at every precision (int8 programs
 * quantize inside), so no (de)quantization happens here.
 */
class Engine(context: Context) : AutoCloseable {
    private val module: Module = Module.load(copyAsset(context, BundleSpec.MODEL_ASSET).absolutePath)
    private val shape = longArrayOf(1, 3, BundleSpec.CROP.toLong(), BundleSpec.CROP.toLong())

    /** One preprocessed NCHW input -> logits. */
    fun run(input: FloatArray): FloatArray {
        val outputs = module.forward(EValue.from(Tensor.fromBlob(input, shape)))
        return outputs[0].toTensor().dataAsFloatArray.copyOf(BundleSpec.NUM_CLASSES)
    }

    override fun close() = module.destroy()

    private fun copyAsset(context: Context, name: String): File {
        val file = File(context.filesDir, name.substringAfterLast('/'))
        context.assets.open(name).use { input -> file.outputStream().use { input.copyTo(it) } }
        return file
    }
}
