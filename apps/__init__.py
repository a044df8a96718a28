"""App bundles: a model, its labels, preprocessing, golden self-test and a sample app, in one folder and zip."""
