"""Networks of the VGGSfM tracker (v2): CNN feature encoders, the iterative track predictor and patch refinement.

Module and parameter names follow the released `vggsfm_v2_tracker.pt` checkpoint.
"""
