package dev.mvdeploy.demo

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO

/** The tests' JVM driver for a bundle's pure-Kotlin core (Preprocessing.kt, Scores.kt):
 *    <out> <image>...              each image decoded by javax.imageio, run through Preprocessing.toInput,
 *                                  its input tensor written as little-endian float32 to <out>/<image name>.f32
 *    --self-test <bundle> <sign>   each golden case's expected logits times <sign> as the "device" logits:
 *                                  Scores.compare's verdict per case on stdout, Scores.deviceOutputs to stdout's last lines */
fun main(args: Array<String>) {
    if (args[0] == "--self-test") return selfTest(File(args[1]), args[2].toFloat())
    val out = File(args[0])
    for (path in args.drop(1)) {
        val image = ImageIO.read(File(path)) ?: error("cannot decode $path")
        val argb = image.getRGB(0, 0, image.width, image.height, null, 0, image.width)
        val input = Preprocessing.toInput(argb, image.width, image.height)
        val bytes = ByteBuffer.allocate(4 * input.size).order(ByteOrder.LITTLE_ENDIAN)
        input.forEach { bytes.putFloat(it) }
        File(out, File(path).name + ".f32").writeBytes(bytes.array())
    }
}

private fun selfTest(bundle: File, sign: Float) {
    val outputs = mutableListOf<Pair<String, FloatArray>>()
    for (i in 0 until BundleSpec.GOLDEN_COUNT) {
        val name = "%03d".format(i)
        val buffer = ByteBuffer.wrap(File(bundle, "golden/${name}_expected.f32").readBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        val expected = FloatArray(buffer.remaining()).also { buffer.get(it) }
        val got = FloatArray(expected.size) { expected[it] * sign }
        val case = Scores.compare(got, expected)
        println("case $name ${if (case.passed) "ok" else "FAIL"} top1 ${Scores.top5(got)[0].first}")
        outputs += "golden/$name.png" to got
    }
    print(Scores.deviceOutputs("JVM driver", outputs))
}
