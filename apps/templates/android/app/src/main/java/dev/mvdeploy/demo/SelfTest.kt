package dev.mvdeploy.demo

import android.content.Context
import android.graphics.BitmapFactory
import android.os.Build
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Runs the golden images (the last one a photo, resized by Preprocessing.kt) through the app's own preprocessing and compares with the expected outputs
 *  in bundle.json's tolerance; writes the logits to device_outputs.json for `mvdeploy verify --device-outputs`. */
object SelfTest {
    const val DEVICE_OUTPUTS = "device_outputs.json"

    fun run(context: Context, classifier: Classifier): List<String> {
        val lines = mutableListOf<String>()
        val outputs = mutableListOf<Pair<String, FloatArray>>()
        var failed = 0
        for (i in 0 until BundleSpec.GOLDEN_COUNT) {
            val name = "%03d".format(i)
            val bitmap = context.assets.open("golden/$name.png").use {
                BitmapFactory.decodeStream(it, null, BitmapFactory.Options().apply { inScaled = false })!!
            }
            val exact = bitmap.width == BundleSpec.CROP && bitmap.height == BundleSpec.CROP
            val input = if (exact) classifier.toInput(bitmap) else classifier.preprocess(bitmap)
            val got = classifier.run(input)
            outputs += "golden/$name.png" to got
            val case = Scores.compare(got, readFloats(context, "golden/${name}_expected.f32"))
            if (!case.passed) failed++
            lines += "golden $name: max_rel %.2e top-1 %s %s".format(case.maxRel, if (case.top1Agrees) "agrees" else "DIFFERS",
                                                                      if (case.passed) "ok" else "FAIL")
        }
        lines += if (failed == 0) "self-test PASSED (${BundleSpec.GOLDEN_COUNT} cases)" else "self-test FAILED ($failed of ${BundleSpec.GOLDEN_COUNT})"
        // adb pull /sdcard/Android/data/dev.mvdeploy.demo/files/device_outputs.json
        val file = File(context.getExternalFilesDir(null), DEVICE_OUTPUTS)
        file.writeText(Scores.deviceOutputs("${Build.MANUFACTURER} ${Build.MODEL}", outputs))
        lines += "logits written to ${file.absolutePath}"
        return lines
    }

    private fun readFloats(context: Context, asset: String): FloatArray {
        val bytes = context.assets.open(asset).readBytes()
        val buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(buf.remaining()).also { buf.get(it) }
    }
}
