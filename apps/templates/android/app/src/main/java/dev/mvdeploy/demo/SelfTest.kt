package dev.mvdeploy.demo

import android.content.Context
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs

/** Runs the golden inputs from the bundle and compares with the expected outputs in bundle.json's tolerance. */
object SelfTest {
    fun run(context: Context, classifier: Classifier): List<String> {
        val lines = mutableListOf<String>()
        var failed = 0
        for (i in 0 until BundleSpec.GOLDEN_COUNT) {
            val name = "%03d".format(i)
            val input = readFloats(context, "golden/${name}_input.f32")
            val expected = readFloats(context, "golden/${name}_expected.f32")
            val got = classifier.run(input)
            val scale = expected.maxOf { abs(it) }.coerceAtLeast(1e-12f)
            val rel = got.indices.maxOf { abs(got[it] - expected[it]) } / scale
            val top1 = got.indices.maxByOrNull { got[it] } == expected.indices.maxByOrNull { expected[it] }
            val ok = rel <= BundleSpec.SELF_TEST_MAX_REL && top1
            if (!ok) failed++
            lines += "golden $name: max_rel %.2e top-1 %s %s".format(rel, if (top1) "agrees" else "DIFFERS", if (ok) "ok" else "FAIL")
        }
        lines += if (failed == 0) "self-test PASSED (${BundleSpec.GOLDEN_COUNT} cases)" else "self-test FAILED ($failed of ${BundleSpec.GOLDEN_COUNT})"
        return lines
    }

    private fun readFloats(context: Context, asset: String): FloatArray {
        val bytes = context.assets.open(asset).readBytes()
        val buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(buf.remaining()).also { buf.get(it) }
    }
}
