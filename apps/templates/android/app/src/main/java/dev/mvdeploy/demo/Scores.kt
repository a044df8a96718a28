package dev.mvdeploy.demo

import kotlin.math.abs
import kotlin.math.exp

/** What the app does with logits, in pure Kotlin (no android.* import, compiled and run by mvdeploy's
 *  tests): top-5 by softmax, a golden case held to bundle.json's tolerance, and device_outputs.json's text
 *  (what `mvdeploy verify --device-outputs` reads). */
object Scores {
    /** The five most probable classes: (index, probability), most probable first. */
    fun top5(logits: FloatArray): List<Pair<Int, Float>> {
        val max = logits.max()
        val e = logits.map { exp(it - max) }
        val sum = e.sum()
        return e.indices.sortedByDescending { e[it] }.take(5).map { it to e[it] / sum }
    }

    class Case(val maxRel: Float, val top1Agrees: Boolean) {
        val passed: Boolean get() = maxRel <= BundleSpec.SELF_TEST_MAX_REL && top1Agrees
    }

    /** One golden case: max |got - expected| / max |expected|, and whether the top-1 class agrees. */
    fun compare(got: FloatArray, expected: FloatArray): Case {
        val scale = expected.maxOf { abs(it) }.coerceAtLeast(1e-12f)
        val rel = got.indices.maxOf { abs(got[it] - expected[it]) } / scale
        return Case(rel, got.indices.maxByOrNull { got[it] } == expected.indices.maxByOrNull { expected[it] })
    }

    /** device_outputs.json: {"device": ..., "cases": [{"image": "golden/000.png", "logits": [...]}, ...]}. */
    fun deviceOutputs(device: String, logits: List<Pair<String, FloatArray>>): String =
        "{\"device\": \"${device.replace("\"", "'")}\", \"cases\": [\n  " +
            logits.joinToString(",\n  ") { (image, values) -> "{\"image\": \"$image\", \"logits\": [${values.joinToString(", ") { json(it) }}]}" } +
            "\n]}\n"

    /** A JSON number as Python's json module reads it (NaN and Infinity too, so a broken run still reports). */
    private fun json(value: Float): String =
        if (value.isNaN()) "NaN" else if (value.isInfinite()) (if (value > 0) "Infinity" else "-Infinity") else value.toString()
}
