package dev.mvdeploy.demo

/** Values from bundle.json, written by mvdeploy for {{MODEL_NAME}} ({{PRECISION}}, weights: {{WEIGHTS}}). */
object BundleSpec {
    const val MODEL_ASSET = "model/{{MODEL_FILE}}"
    const val INPUT_NAME = "{{INPUT_NAME}}"
    const val OUTPUT_NAME = "{{OUTPUT_NAME}}"
    const val NHWC = {{NHWC}}                    // input layout {{LAYOUT}}
    const val RESIZE = {{RESIZE}}                // shorter side, pixels
    const val CROP = {{CROP}}                    // center crop, pixels (= model input side)
    val MEAN = floatArrayOf({{MEAN}})            // after scaling pixels to [0, 1]
    val STD = floatArrayOf({{STD}})
    const val NUM_CLASSES = {{NUM_CLASSES}}
    const val INPUT_SCALE = {{INPUT_SCALE}}f     // 0 when the input is float
    const val INPUT_ZERO_POINT = {{INPUT_ZERO_POINT}}
    const val OUTPUT_SCALE = {{OUTPUT_SCALE}}f   // 0 when the output is float
    const val OUTPUT_ZERO_POINT = {{OUTPUT_ZERO_POINT}}
    const val GOLDEN_COUNT = {{GOLDEN_COUNT}}
    const val SELF_TEST_MAX_REL = {{TOL_MAX_REL}}f   // max |out - expected| / max |expected|
}
