"""Reduced precision for the exported graphs: FP16 (``fp16.py``), INT8 with explicit Q/DQ
(``int8.py``), the per-scope sensitivity pass (``sensitivity.py``), the pipeline that runs them
on event data (``pipeline.py``) and its accuracy report (``report.py``).

The event data itself (simulator, DSEC/M3ED/MVSEC readers, query sampler) lives in
``eventspd_export.data``.
"""
