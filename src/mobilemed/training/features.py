"""Features of a frozen backbone, computed once per image and cached.

This is what makes the linear probe cheap: the tutorial recomputes the frozen backbone on every
image in every epoch; here one eval-mode pass yields (N, D) features, and the head trains on those.
ONNX Runtime runs that pass about 4-5x faster than torch eager on a 2-core CPU, so it is used when
installed (`pip install 'mobilemed[fast]'`); the torch path gives the same numbers to ~1e-5.

A producer thread prepares the next chunk (pages in the memory-mapped cache, then `to_model_input`:
channels, resize, normalisation) while ONNX Runtime, which releases the GIL, runs the current one. It
is never more than PREFETCH chunks ahead, so float32 input exists for a few chunks, never the set.
For the training split the probe may use an int8 copy of the backbone (training/feature_precision.py).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import queue
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mobilemed.assets import home
from mobilemed.data.transforms import Augmentation, to_model_input
from mobilemed.errors import MissingExtraError
from mobilemed.export.metadata import INPUT_NAME
from mobilemed.fsutil import atomic_write
from mobilemed.spec import ModelSpec

log = logging.getLogger(__name__)
CHUNK = 16      # images per ONNX Runtime call: its arena holds one call's activations (~15 MB an image at 224 px)
CHUNKS = {"fp32": 8, "int8": CHUNK}  # fp32 activations are 4x int8's: half the chunk keeps the probe under 1.5 GB
PREFETCH = 2    # chunks the producer may hold ready ahead of the consumer
CALIBRATION_IMAGES = 32  # training images whose activations set the int8 scales
CALIBRATION_BATCH = 1  # images per calibration pass: the calibrator holds every activation of a pass (~100 MB an image)


def frozen_features(backbone: torch.nn.Module, images: np.ndarray, spec: ModelSpec, *,
                    progress: bool = True, use_cache: bool = True) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, D) float32 features of the eval-mode backbone (fp32)."""
    return FeaturePass(backbone, spec, progress=progress).features(images, use_cache=use_cache)


class FeaturePass:
    """The frozen backbone of one run as a feature extractor: fp32 (ONNX Runtime, or torch without it) and,
    once `calibrate_int8` has run, an int8 ONNX Runtime copy. Sessions are built on first use."""

    def __init__(self, backbone: nn.Module, spec: ModelSpec, *, progress: bool = True):
        self.backbone, self.spec, self.progress = backbone.eval(), spec, progress
        self._runners: dict = {}
        self.images_per_second: dict[str, float] = {}  # of the last pass each precision computed
        self._onnx: bytes | None = None
        self._digest = hashlib.sha1(f"v2|{spec.arch}|{spec.image_size}|{spec.in_chans}|{spec.mean}|{spec.std}".encode())
        for tensor in backbone.state_dict().values():
            self._digest.update(tensor.detach().cpu().numpy().tobytes())

    def features(self, images: np.ndarray, precision: str = "fp32", *, use_cache: bool = True,
                 augmented: tuple[Augmentation, int] | None = None) -> np.ndarray:
        """(N, H, W[, C]) uint8 -> (N, D) float32; cached under MOBILEMED_HOME/features/ by content.
        augmented: (augmentation, seed): the features of one augmented copy of each image (augmented_chunks)."""
        key = self._key(images, precision if augmented is None else f"{precision}|{augmented}")
        path = home() / "features" / f"{key}.npy" if use_cache else None
        if path is not None and path.exists():
            log.info("%s features from cache %s", precision, path.name)
            return np.load(path)
        runner, tic = self._runner(precision), time.perf_counter()
        size = CHUNKS[precision]
        inputs = input_chunks(images, self.spec, size) if augmented is None else \
            augmented_chunks(images, self.spec, augmented[1], 0, augmented[0], size)
        batches = prefetched(inputs, PREFETCH)
        chunks = [runner(chunk) for chunk in tqdm(batches, total=-(-len(images) // size), unit="batch",
                                                  desc=f"backbone features ({precision})", disable=not self.progress)]
        features = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 0), np.float32)
        self.images_per_second[precision] = len(images) / max(time.perf_counter() - tic, 1e-9)
        del chunks, batches
        release_freed_memory()
        if path is not None:
            with atomic_write(path, "wb") as handle:
                np.save(handle, features)
        return features

    def calibrate_int8(self, images: np.ndarray, *, seed: int = 0) -> int:
        """Build the int8 session, its scales set by CALIBRATION_IMAGES of `images` (training images, never
        test). Returns the number of images used. Raises MissingExtraError without onnxruntime."""
        from mobilemed.export.quantize import FLOAT_TAIL, quantize_int8

        if not _has_onnxruntime():
            raise MissingExtraError("onnxruntime", "fast", "the int8 feature pass")
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(len(images), min(CALIBRATION_IMAGES, len(images)), replace=False))
        calibration = to_model_input(np.asarray(images[chosen]), self.spec).numpy()  # (N, C, S, S)
        with tempfile.TemporaryDirectory() as tmp:
            fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            fp32_path.write_bytes(self._onnx_bytes())
            # Min-max ranges: a sixth of the percentile calibration's time, and probe_features checks
            # the int8 features on validation before the probe uses them.
            used = quantize_int8(fp32_path, int8_path, calibration, batch_size=CALIBRATION_BATCH,
                                 percentile=False).calibration_images
            self._runners["int8"] = _ort_runner(int8_path.read_bytes())
        # The scales depend on the calibration images and on how they were set.
        self._digest.update(f"int8|minmax|float tail {FLOAT_TAIL}".encode() + np.ascontiguousarray(calibration).data)
        return used

    def speedup(self, images: np.ndarray) -> float:
        """How many times as fast the int8 session runs as the fp32 one on the first chunk of `images`
        (best of two timed runs each, after a warm-up)."""
        x = next(input_chunks(images, self.spec))
        seconds = {}
        for precision in ("fp32", "int8"):
            run = self._runner(precision)
            run(x[:2])
            seconds[precision] = min(_timed(run, x) for _ in range(2))
        return seconds["fp32"] / seconds["int8"]

    def release(self, precision: str) -> None:
        """Drop a precision's session and hand its memory arena back (it is rebuilt if asked for again)."""
        self._runners.pop(precision, None)
        release_freed_memory()

    def _runner(self, precision: str):
        if precision not in self._runners:
            if precision != "fp32":
                raise RuntimeError("call calibrate_int8 before asking for int8 features")
            self._runners["fp32"] = _ort_runner(self._onnx_bytes()) if _has_onnxruntime() \
                else _torch_runner(self.backbone)
        return self._runners[precision]

    def _key(self, images: np.ndarray, precision: str) -> str:
        digest = self._digest.copy()
        digest.update(f"{precision}|{images.shape}".encode())
        digest.update(np.ascontiguousarray(images).data)
        return digest.hexdigest()

    def _onnx_bytes(self) -> bytes:
        if self._onnx is None:
            self._onnx = _export_backbone(self.backbone, self.spec)
        return self._onnx


def input_chunks(images: np.ndarray, spec: ModelSpec, size: int = CHUNK):
    """(B, in_chans, S, S) float32 model input, chunk by chunk, from uint8 `images` (may be memory-mapped).
    The normalisation runs here rather than in the graph because antialiased resizing (28 px MedMNIST)
    does not export to ONNX."""
    for start in range(0, len(images), size):
        yield to_model_input(np.asarray(images[start:start + size]), spec).numpy()


def augmented_chunks(images: np.ndarray, spec: ModelSpec, seed: int, view: int,
                     augmentation: Augmentation = Augmentation(), size: int = CHUNK):
    """input_chunks with `augmentation` applied (one random draw per image), reproducible from (seed, view)
    and `size`: the cached views of a frozen prefix, a probe's augmented training features."""
    generator = torch.Generator().manual_seed(seed * 100_003 + 7919 * view)
    for start in range(0, len(images), size):
        x = to_model_input(np.asarray(images[start:start + size]), spec)
        yield augmentation(x, generator).numpy()


def prefetched(items, depth: int):
    """Yield `items` in order, produced by a background thread that is at most `depth` items ahead (plus the
    one it is making). An exception in the producer is raised here; closing the generator stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop, done = threading.Event(), object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(done)
        except BaseException as err:  # handed to the consumer, which re-raises it
            ready.put(_Failure(err))

    thread = threading.Thread(target=produce, daemon=True, name="feature-prefetch")
    thread.start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def release_freed_memory() -> None:
    """Hand memory freed by the pass back to the OS (glibc only; elsewhere nothing happens). The producer
    and ONNX Runtime threads allocate chunk-sized blocks in their own malloc arenas, which glibc keeps
    after they are freed: ~200 MB stayed resident after a Kermany pass, for the rest of the run."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _timed(run, x: np.ndarray) -> float:
    tic = time.perf_counter()
    run(x)
    return time.perf_counter() - tic


def _has_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        log.info("onnxruntime not installed: computing features with torch (pip install 'mobilemed[fast]')")
        return False
    return True


def _torch_runner(backbone: nn.Module):
    model = backbone.to(memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()

    return run


def _export_backbone(backbone: nn.Module, spec: ModelSpec) -> bytes:
    import io

    buffer = io.BytesIO()
    dummy = torch.zeros(2, spec.in_chans, spec.image_size, spec.image_size)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The TorchScript exporter is deprecated but, unlike the dynamo exporter, needs no onnxscript
        # and exports MobileNet's plain conv graph exactly (max abs diff ~1e-5 against torch).
        warnings.simplefilter("ignore")
        torch.onnx.export(backbone.eval(), (dummy,), buffer, dynamo=False,
                          input_names=[INPUT_NAME], output_names=["features"], opset_version=17,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, "features": {0: "batch"}})
    return buffer.getvalue()


def _ort_runner(model_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT_NAME: x})[0]
