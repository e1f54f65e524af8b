"""``eventspd-export bench``: EventSPD's latency T(K) = T_pre + beta * K against a dense baseline.

For every requested backend this measures, on one synthetic event window (not all zeros) and
random query sets, after warm-up and over several repetitions: the precompute (Phase A), the
decoder (Phase B) at each K, and the two together (end to end, timed as one call). It fits
T(K) = T_pre + beta * K by least squares, times the dense baseline
(``model_def.dense_baseline``: F^3 ds2 + DAv2-S ViT-S/14 + DPT, every pixel) in the same run,
and reports the speed-up at each K and the crossover K where the fitted T(K) reaches the dense
time. Torch backends also get a per-stage breakdown (the stages are called one by one, in the
model's order, and checked against the model's own output).

Backends
  ``torch``          the model with the reference ops (``model_def.ops`` backend "reference")
  ``torch-plugins``  the model with the compiled kernels (``ops.use_backend("plugin")``; on
                     CUDA every ConvNeXt-V2 block, F^3's, L1's and L2's, runs as the fused
                     ``convnext_block`` op, in the dense baseline's F^3 too); skipped when
                     ``plugins.torch_ext`` does not import (or, on CUDA, was built without
                     CUDA kernels)
  ``onnxrt``         ONNX Runtime on the exported graphs (``--onnx-dir`` or a fresh export to a
                     temporary folder); CPU provider, or the CUDA provider on ``--device cuda``
                     (skipped when onnxruntime has none); fp32 only
  ``torch-cudagraph``, ``torch-plugins-cudagraph``
                     the same two on CUDA with each phase captured once into a CUDA graph
                     (``torch.cuda.CUDAGraph``) and replayed: the launch overhead of the many
                     small kernels goes, the arithmetic stays; queries are copied into the
                     graph's static input, which the timing includes. Their dense baseline is
                     graphed too (same optimisation level). Skipped on CPU. Their stage
                     breakdown is the eager backends' (a graph replays a whole phase). The
                     F^3 encoder runs channels-last there (cuDNN's NHWC depthwise kernels;
                     same values); with the plugin ops B4's value maps are emitted
                     channels-last (read in place by the CUDA deform_read); ``--packed-kv``
                     also packs B2/B5's K/V projections into one GEMM each
                     (``model_def.packed``), an A/B switch, off by default
  ``torch-plugins-compiled``
                     ``torch-plugins-cudagraph`` with Phase A, Phase B (once per K) and the
                     dense baseline's stages compiled by ``torch.compile`` (inductor, default
                     mode, static shapes) before capture
  ``trt``            skipped with the reason: ``tensorrt`` does not import here, and the
                     TensorRT engine timing path is not part of this benchmark yet
A backend that cannot run is ``skipped`` with the reason the runtime registry gives
(``eventspd_export.runtime.registry``; ``eventspd-export backends`` prints it for every backend);
one that raises while running is ``failed`` with the error (the other backends still run).

Timing: CUDA events around each call on ``--device cuda`` (``time.perf_counter`` around
synchronous calls on CPU and for ONNX Runtime, whose ``run`` returns host arrays). fp16 means
``torch.autocast(float16)`` over fp32 weights: the model's fp32 coordinate arithmetic (the
splat's fp32 output, B1/B4 sampling positions) does not run under a plain ``.half()``.
The fit uses the precompute median plus the decoder median at each K (the decoder is timed on
its own, so beta is not buried in the precompute's run-to-run spread); ``fit_end_to_end`` fits
the end-to-end medians as a cross-check. Host memory is the peak RSS (``VmHWM``, reset per
block through ``/proc/self/clear_refs`` where Linux allows, otherwise the process peak);
device memory is ``torch.cuda.max_memory_allocated`` per block.

JSON (``run_bench`` returns it, ``write_json`` writes it). Times in milliseconds; K keys are
strings. Top level:
  ``schema``           "eventspd-export/bench-1"
  ``created``          local time, ISO 8601
  ``config``           {name, width, height}
  ``environment``      {python, torch, numpy, onnxruntime (version or null), device_type,
                       device_name, cuda (torch.version.cuda or null), torch_threads, cpu_count,
                       cudnn_benchmark, cudnn_allow_tf32, matmul_allow_tf32,
                       load_average_start, load_average_end (1-minute
                       load of the machine when the run started and ended, or null)}
  ``settings``         {device, precision, precision_mode, backends (as requested), ks, events,
                       repeat, warmup, timer, seed, dense_modes, stages, threads (torch's CPU
                       threads; ONNX Runtime gets the same number when --threads is given),
                       checkpoint, packed_kv}
  ``eventspd_params``  {total (backbone + A3/A4 + decoder, the seed's 11.1M), f3, decoder}
  ``dense``            entry name (the torch backend whose ops it ran with) -> {ops_backend,
                       cuda_graphs, compiled (true for the graphed/compiled backends'
                       entries), params (``DenseBaseline.parameter_counts``), modes: mode -> {input_hw,
                       total (stats), stages: {f3, vit, dpt} (stats), memory}}; {} with
                       ``--no-dense``
  ``dense_errors``     entry name -> error, for a dense run that raised ({} normally)
  ``backends``         requested backend name -> backend entry (below)
  ``summary``          one row per backend: {backend, status, reason, t_pre_ms, beta_us,
                       dense_ms, crossover_k, speedup (K -> x)}
  ``plot``             {path, status ("written", "skipped" or "not requested"), reason}

Statistics (``stats``): {median_ms, min_ms, max_ms, p25_ms, p75_ms, iqr_ms, mean_ms, std_ms,
n, samples_ms}.

Backend entry: ``status`` ("ok", "skipped", "failed") and ``reason`` (null when ok); when ok:
  ``runtime``          what ran (ops backend or ONNX Runtime provider)
  ``precompute``       stats of Phase A
  ``decoder``          K -> stats of Phase B
  ``end_to_end``       K -> stats of Phase A + B timed as one call
  ``fit``              {t_pre_ms, beta_us, r2, rmse_ms, ks}: T(K) = T_pre + beta*K fitted to
                       precompute median + decoder median(K)
  ``fit_end_to_end``   the same fit on the end-to-end medians
  ``dense``            {entry, mode, median_ms}: the dense time the speed-ups divide (the
                       "dav2" mode; null without a dense run)
  ``speedup``          K -> dense median / end-to-end median (null without a dense run)
  ``speedup_square``   K -> the same against the 518x518 mode (null without it)
  ``crossover``        dense mode -> {k, dense_ms, note}: K at which the fitted T(K) equals the
                       dense time; k is null when there is none (the note says why)
  ``stages``           {precompute: stage -> stats, decoder: K -> stage -> stats, check:
                       {precompute_max_abs_diff, decoder_max_abs_diff}} or null
  ``stages_reason``    why ``stages`` is null (null otherwise)
  ``graph_check``      graphed/compiled backends only: {precompute_max_rel, decoder_max_rel},
                       the replayed outputs against the eager, unmodified model's once (not
                       the channels-last/packed copy that is replayed), max |diff| / max
                       |eager| over all outputs and K (fp16, channels-last and compiled code
                       round differently; a broken capture shows as O(1))
  ``memory``           {host_peak_rss_mb, host_scope ("block" or "process"), device_peak_mb}:
                       the process's peak resident memory during the backend's block (all that
                       is resident counts, the Python runtime and the models included) and
                       ``torch.cuda.max_memory_allocated`` over the block (null on CPU)

Modules: ``options.py`` (options, names, limits), ``timing.py`` (clock, statistics, fit,
memory), ``backends.py`` (what each backend runs), ``dense.py`` (the dense baseline),
``runner.py`` (``run_bench``), ``report.py`` (JSON, table, plot), ``profile.py`` (the per-stage
kernel profile of ``scripts/profile_stages.py``).
"""
