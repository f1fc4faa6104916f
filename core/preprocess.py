"""How raw images (uint8 RGB, HWC) become model inputs: `x = (to_order(x) * scale - mean) / std`, then layout.

A spec is a preset name, `key=value` pairs, or a preset followed by overrides, e.g.
    "imagenet"                            torchvision mean/std, NCHW
    "squeezenet-bgr"                      the Caffe convention: BGR, mean subtraction, no scaling
    "efficientnet-lite,layout=nhwc"       a preset with an override
    "order=bgr,scale=1,mean=103.939:116.779:123.68,std=1,layout=nchw,resize=256,crop=224"
Per-channel values are separated by ':'. `scale` accepts fractions ("1/255"). Presets cover every model in
../shared/models/MODELS.md; plugins add more through the `edgec_preprocess_presets` hook.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgec.core.errors import InputError

PRESETS: dict[str, str] = {
    "imagenet": "order=rgb,scale=1/255,mean=0.485:0.456:0.406,std=0.229:0.224:0.225",
    "torchvision": "order=rgb,scale=1/255,mean=0.485:0.456:0.406,std=0.229:0.224:0.225",
    "efficientnet-lite": "order=rgb,scale=1/255,mean=0.498,std=0.502",
    "squeezenet-bgr": "order=bgr,scale=1,mean=103.939:116.779:123.68,std=1",
    "caffe-bgr": "order=bgr,scale=1,mean=103.939:116.779:123.68,std=1",
    "unit": "scale=1/255",
    "fashion-mnist": "scale=1/255,gray=true",
    "none": "scale=1",
}


def _floats(text: str, key: str) -> tuple[float, ...]:
    try:
        return tuple(_float(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--preprocess {key}={text!r} is not a number or ':'-separated numbers") from None


def _float(v: str) -> float:
    if "/" in v:
        a, b = v.split("/", 1)
        return float(a) / float(b)
    return float(v)


@dataclass(frozen=True)
class Preprocess:
    order: str = "rgb"
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None  # None: taken from the model input (channels where the 1 or 3 is)
    resize: int | None = None  # shorter side, before the center crop
    crop: int | None = None
    gray: bool | None = None  # None: decided from the model's channel count
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, spec: "str | Preprocess | None", extra_presets: dict[str, str] | None = None) -> "Preprocess | None":
        if spec is None or isinstance(spec, Preprocess):
            return spec
        presets = {**PRESETS, **(extra_presets or {})}
        pp = cls(text=spec)
        for part in [p.strip() for p in spec.split(",") if p.strip()]:
            if "=" not in part:
                if part not in presets:
                    raise InputError(f"unknown --preprocess preset '{part}' (presets: {', '.join(sorted(presets))}; "
                                     "or give key=value pairs: order, scale, mean, std, layout, resize, crop, gray)")
                pp = replace(cls.parse(presets[part], extra_presets), text=spec)
                continue
            key, value = (s.strip() for s in part.split("=", 1))
            if key == "order":
                if value.lower() not in ("rgb", "bgr"):
                    raise InputError(f"--preprocess order={value!r}: use rgb or bgr")
                pp = replace(pp, order=value.lower())
            elif key == "scale":
                pp = replace(pp, scale=_floats(value, key)[0])
            elif key in ("mean", "std"):
                vals = _floats(value, key)
                if key == "std" and any(v == 0 for v in vals):
                    raise InputError("--preprocess std must not contain 0")
                pp = replace(pp, **{key: vals})
            elif key == "layout":
                if value.lower() not in ("nchw", "nhwc"):
                    raise InputError(f"--preprocess layout={value!r}: use nchw or nhwc")
                pp = replace(pp, layout=value.lower())
            elif key in ("resize", "crop"):
                pp = replace(pp, **{key: int(_floats(value, key)[0])})
            elif key == "gray":
                pp = replace(pp, gray=value.lower() in ("1", "true", "yes"))
            else:
                raise InputError(f"unknown --preprocess key '{key}' (keys: order, scale, mean, std, layout, "
                                 "resize, crop, gray)")
        return pp

    def describe(self) -> dict:
        return {"order": self.order, "scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "layout": self.layout, "resize": self.resize, "crop": self.crop, "gray": self.gray, "spec": self.text}

    def model_geometry(self, shape: tuple) -> tuple[str, int | None, int | None, int | None]:
        """(layout, channels, height, width) of a 4-D model input (ints or None for dynamic dims)."""
        dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
        if len(dims) == 3:  # [N, H, W] grayscale models
            return "nhw", 1, dims[1], dims[2]
        if len(dims) != 4:
            raise InputError(f"--preprocess applies to image inputs of rank 3 or 4; the model input has shape {shape}")
        layout = self.layout
        if layout is None:
            layout = "nhwc" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "nchw"
        if layout == "nchw":
            return layout, dims[1], dims[2], dims[3]
        return layout, dims[3], dims[1], dims[2]

    def apply(self, img: np.ndarray, shape: tuple, dtype: str = "float32") -> np.ndarray:
        """uint8 image (HxW or HxWxC, RGB) -> one model input sample with a batch axis of 1."""
        layout, channels, height, width = self.model_geometry(shape)
        img = self._geometry(img, height, width, channels)
        x = img.astype(np.float32)
        if x.ndim == 3 and self.order == "bgr":
            x = x[..., ::-1]
        x = x * np.float32(self.scale)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if x.ndim == 3 and len(mean) not in (1, x.shape[-1]) or x.ndim == 3 and len(std) not in (1, x.shape[-1]):
            raise InputError(f"--preprocess mean/std have {len(mean)}/{len(std)} values but the image has "
                             f"{x.shape[-1]} channels")
        x = (x - mean) / std
        if layout == "nhw":
            x = x if x.ndim == 2 else x[..., 0]
        elif x.ndim == 2:
            x = x[None] if layout == "nchw" else x[..., None]
        elif layout == "nchw":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None]).astype(dtype)

    def _geometry(self, img: np.ndarray, height, width, channels) -> np.ndarray:
        from PIL import Image

        want_gray = self.gray if self.gray is not None else channels == 1
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        needs_resize = (height and width and img.shape[:2] != (height, width)) or self.resize or self.crop
        if needs_resize or (want_gray and img.ndim == 3) or (not want_gray and img.ndim == 2):
            pil = Image.fromarray(img)
            pil = pil.convert("L" if want_gray else "RGB")
            if self.resize:
                w, h = pil.size
                s = self.resize / min(w, h)
                pil = pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            crop_h, crop_w = (self.crop, self.crop) if self.crop else (height, width)
            if crop_h and crop_w and self.crop:
                w, h = pil.size
                left, top = (w - crop_w) // 2, (h - crop_h) // 2
                pil = pil.crop((left, top, left + crop_w, top + crop_h))
            if height and width and pil.size != (width, height):
                pil = pil.resize((width, height), Image.BILINEAR)
            img = np.asarray(pil)
        return img
