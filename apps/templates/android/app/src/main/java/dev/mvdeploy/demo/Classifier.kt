package dev.mvdeploy.demo

import android.content.Context
import android.graphics.Bitmap

/** The bundle's preprocessing and top-5 around the model's runtime (Engine.kt: LiteRT or ExecuTorch). */
class Classifier(context: Context) : AutoCloseable {
    private val engine = Engine(context)
    val labels: List<String> = context.assets.open("labels.txt").bufferedReader().readLines()

    /** A photo -> the model's input, by the pure-Kotlin core (Preprocessing.kt: bundle.json's resize). */
    fun preprocess(bitmap: Bitmap): FloatArray = Preprocessing.toInput(pixels(bitmap), bitmap.width, bitmap.height)

    /** A CROP x CROP image (a golden image as is): scale, mean/std, the model's layout. */
    fun toInput(square: Bitmap): FloatArray = Preprocessing.normalize(pixels(square))

    private fun pixels(bitmap: Bitmap): IntArray =
        IntArray(bitmap.width * bitmap.height).also { bitmap.getPixels(it, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height) }

    /** One preprocessed input (in the model's layout) -> logits, on the bundle's runtime (Engine.kt). */
    fun run(input: FloatArray): FloatArray = engine.run(input)

    fun top5(logits: FloatArray): List<Pair<String, Float>> = Scores.top5(logits).map { (i, p) -> labels[i] to p }

    override fun close() = engine.close()
}
