package dev.mvdeploy.demo

import android.content.Context
import android.graphics.BitmapFactory
import android.os.Build
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs

/** Runs the golden images (the last one a photo, resized by Preprocessing.kt) through the app's own preprocessing and compares with the expected outputs
 *  in bundle.json's tolerance; writes the logits to device_outputs.json for `mvdeploy verify --device-outputs`. */
object SelfTest {
    const val DEVICE_OUTPUTS = "device_outputs.json"

    fun run(context: Context, classifier: Classifier): List<String> {
        val lines = mutableListOf<String>()
        val cases = mutableListOf<String>()
        var failed = 0
        for (i in 0 until BundleSpec.GOLDEN_COUNT) {
            val name = "%03d".format(i)
            val bitmap = context.assets.open("golden/$name.png").use {
                BitmapFactory.decodeStream(it, null, BitmapFactory.Options().apply { inScaled = false })!!
            }
            val exact = bitmap.width == BundleSpec.CROP && bitmap.height == BundleSpec.CROP
            val input = if (exact) classifier.toInput(bitmap) else classifier.preprocess(bitmap)
            val expected = readFloats(context, "golden/${name}_expected.f32")
            val got = classifier.run(input)
            cases += "{\"image\": \"golden/$name.png\", \"logits\": [${got.joinToString(", ")}]}"
            val scale = expected.maxOf { abs(it) }.coerceAtLeast(1e-12f)
            val rel = got.indices.maxOf { abs(got[it] - expected[it]) } / scale
            val top1 = got.indices.maxByOrNull { got[it] } == expected.indices.maxByOrNull { expected[it] }
            val ok = rel <= BundleSpec.SELF_TEST_MAX_REL && top1
            if (!ok) failed++
            lines += "golden $name: max_rel %.2e top-1 %s %s".format(rel, if (top1) "agrees" else "DIFFERS", if (ok) "ok" else "FAIL")
        }
        lines += if (failed == 0) "self-test PASSED (${BundleSpec.GOLDEN_COUNT} cases)" else "self-test FAILED ($failed of ${BundleSpec.GOLDEN_COUNT})"
        // adb pull /sdcard/Android/data/dev.mvdeploy.demo/files/device_outputs.json
        val file = File(context.getExternalFilesDir(null), DEVICE_OUTPUTS)
        file.writeText("{\"device\": \"${Build.MANUFACTURER} ${Build.MODEL}\", \"cases\": [\n  ${cases.joinToString(",\n  ")}\n]}\n")
        lines += "logits written to ${file.absolutePath}"
        return lines
    }

    private fun readFloats(context: Context, asset: String): FloatArray {
        val bytes = context.assets.open(asset).readBytes()
        val buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(buf.remaining()).also { buf.get(it) }
    }
}
