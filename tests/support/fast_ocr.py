"""The real spotter at a test-sized setting, for tests whose subject is the stage, not OCR.

The default spotter upscales every image to a 1024 px short side and takes a padded
second look at 640 px (udfs/batched_ocr.py): right for web images, ~0.8 s per generated
test image on 2 cores. At 512 px and one look it is ~0.15 s and still finds the text of
every generated text image. The default setting runs in tests/udfs/test_ocr*.py, in
Spark in the slow whole-pipeline test (tests/jobs/test_pipeline.py, conf/demo.yaml), in
`deparrot demo`, and on real photographs in benchmarks/ocr_real.py.
"""

FAST_OCR = {"det_limit_side_len": 512, "look_side": 0}
