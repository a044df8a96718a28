package dev.mvdeploy.demo

import android.graphics.ImageDecoder
import android.os.Bundle
import android.widget.Button
import android.widget.ImageView
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity

/** Pick a photo -> top-5 classes; "Self-test" -> golden inputs against bundle.json's tolerance. */
class MainActivity : AppCompatActivity() {
    private lateinit var classifier: Classifier

    private val pick = registerForActivityResult(ActivityResultContracts.GetContent()) { uri ->
        if (uri == null) return@registerForActivityResult
        val bitmap = ImageDecoder.decodeBitmap(ImageDecoder.createSource(contentResolver, uri)) { d, _, _ ->
            d.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
        }
        findViewById<ImageView>(R.id.photo).setImageBitmap(bitmap)
        val top = classifier.top5(classifier.run(classifier.preprocess(bitmap)))
        findViewById<TextView>(R.id.result).text = top.joinToString("\n") { (label, p) -> "%-16s %.3f".format(label, p) }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        classifier = Classifier(this)
        findViewById<Button>(R.id.choose).setOnClickListener { pick.launch("image/*") }
        findViewById<Button>(R.id.selftest).setOnClickListener {
            findViewById<TextView>(R.id.result).text = SelfTest.run(this, classifier).joinToString("\n")
        }
    }

    override fun onDestroy() {
        classifier.close()
        super.onDestroy()
    }
}
