package dev.mvdeploy.demo

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO

/** The test's JVM driver for a bundle's Preprocessing.kt: each image decoded by javax.imageio, run through
 *  the core, its input tensor written as little-endian float32 to <out>/<image name>.f32. */
fun main(args: Array<String>) {
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
