"""What a converted package says about itself: the model's own fields and user_defined_metadata."""
from __future__ import annotations

import json

from mobilevit_deploy.formats.mlpackage import CONVERTER_KEY, META_PREFIX, PRECISION_KEY, PREPROCESS_KEY
from mobilevit_deploy.spec import ExportSpec
from mobilevit_deploy.versions import version_of

from .frontends import INPUT_NAME, LOGITS
from .options import CoreMLOptions

STANDARD_METADATA = ("author", "license", "version", "short_description")   # the model's own fields


def user_metadata(spec: ExportSpec, options: CoreMLOptions, converter: str) -> dict[str, str]:
    """mvdeploy's own keys (under META_PREFIX), then every given key that is not a standard field."""
    own = {
        f"{META_PREFIX}model": spec.model_name,
        PRECISION_KEY: spec.precision.value,
        CONVERTER_KEY: converter,
        f"{META_PREFIX}ios": str(options.ios),
        f"{META_PREFIX}toolkit_version": version_of("mvdeploy", missing="dev"),
    }
    if options.preprocess:
        own[PREPROCESS_KEY] = json.dumps(options.preprocess)
    given = {key: value if isinstance(value, str) else json.dumps(value)
             for key, value in options.metadata.items() if key not in STANDARD_METADATA}
    return {**own, **given}


def describe(mlmodel, spec: ExportSpec, options: CoreMLOptions, converter: str) -> None:
    """Write the metadata and the I/O descriptions into the MLModel before it is saved."""
    for key in STANDARD_METADATA:
        if key in options.metadata:
            setattr(mlmodel, key, str(options.metadata[key]))
    for key, value in user_metadata(spec, options, converter).items():
        mlmodel.user_defined_metadata[key] = value
    mlmodel.input_description[INPUT_NAME] = (
        "RGB image" if options.image_input else f"float32 [1, 3, {spec.image_size}, {spec.image_size}], preprocessed"
    )
    mlmodel.output_description[LOGITS] = "class logits, float32"
