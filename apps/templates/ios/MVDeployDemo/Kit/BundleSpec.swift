import Foundation

/// Values from bundle.json, written by mvdeploy for {{MODEL_NAME}} ({{PRECISION}}, weights: {{WEIGHTS}}).
public enum BundleSpec {
    public static let modelResource = "{{MODEL_STEM}}"      // {{MODEL_FILE}}, compiled by Xcode to .mlmodelc
    public static let inputName = "{{INPUT_NAME}}"          // image input, {{CROP}}x{{CROP}} RGB
    public static let outputName = "{{OUTPUT_NAME}}"        // logits [1, {{NUM_CLASSES}}]
    public static let resize = {{RESIZE}}                   // shorter side before the center crop
    public static let crop = {{CROP}}
    public static let numClasses = {{NUM_CLASSES}}
    public static let goldenCount = {{GOLDEN_COUNT}}
    public static let selfTestMaxRel: Float = {{TOL_MAX_REL}}   // max |out - expected| / max |expected|
    // Scale 1/255 and per-channel mean ({{MEAN}}) / std ({{STD}}) are inside the model.
}
