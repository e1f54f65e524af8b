"""EventSPD plugins: CUDA/C++ kernels of topr_route, deform_read and event_splat.

* ``plugins.torch_ext``  -- the PyTorch extension (``torch.ops.eventspd_plugins``), built when
  the package is installed (see ``plugins/build_ext.py``).
* ``plugins.trt_build``  -- builds the TensorRT plugin library ``libeventspd_plugins.so``.
* ``plugins/README.md``  -- inputs, outputs, fields and semantics of each plugin.
"""
