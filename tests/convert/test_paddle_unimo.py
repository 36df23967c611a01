"""The Paddle persistables reader on a directory written here, in the documented LoDTensor format, with
UNIMO's official names: the loaded model matches a plain re-computation from the arrays."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmbert.convert.common import CheckpointError
from mmbert.convert.paddle import read_lod_tensor
from mmbert.convert.paddle_unimo import is_persistables_dir, load_unimo_paddle, load_unimo_paddle_pretraining
from mmbert.models.unimo import unimo_tiny

DTYPE_CODES = {np.dtype("float32"): 5, np.dtype("float16"): 4, np.dtype("int64"): 3}


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def write_lod_tensor(path, array: np.ndarray, lod: list[list[int]] = (), packed: bool = False) -> None:
    """Paddle 1.8's LoDTensor stream: version, LoD levels, tensor version, TensorDesc protobuf, raw data."""
    desc = b"\x08" + varint(DTYPE_CODES[array.dtype])
    if packed:
        dims = b"".join(varint(d) for d in array.shape)
        desc += b"\x12" + varint(len(dims)) + dims
    else:
        desc += b"".join(b"\x10" + varint(d) for d in array.shape)
    out = struct.pack("<I", 0) + struct.pack("<Q", len(lod))
    for level in lod:
        out += struct.pack("<Q", 8 * len(level)) + np.asarray(level, "<u8").tobytes()
    out += (
        struct.pack("<I", 0)
        + struct.pack("<i", len(desc))
        + desc
        + array.astype(array.dtype.newbyteorder("<")).tobytes()
    )
    path.write_bytes(out)


def official_arrays(c, seed: int = 0) -> dict[str, np.ndarray]:
    """Random parameters under UNIMO's Paddle names, FC weights [in, out]."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    d = c.dim
    a = {"word_embedding": r(c.vocab_size, d), "pos_embedding": r(c.max_positions, d)}
    for name in ("pre_encoder", "v_pre_encoder", "mask_lm_trans"):
        a[f"{name}_layer_norm_scale"], a[f"{name}_layer_norm_bias"] = 1 + r(d), r(d)
    for name, fan_in, fan_out in (("image_emb", c.region_feat_dim, d), ("image_loc", 5, d), ("pooled_fc_text", d, d),
                                  ("pooled_fc_image", d, d), ("mask_lm_trans_fc", d, d)):  # fmt: skip
        a[f"{name}.w_0"], a[f"{name}.b_0"] = r(fan_in, fan_out), r(fan_out)
    a["mask_lm_out_fc.b_0"] = r(c.vocab_size)
    for i in range(c.num_layers):
        p = f"encoder_layer_{i}"
        for n in ("query", "key", "value", "output"):
            a[f"{p}_multi_head_att_{n}_fc.w_0"], a[f"{p}_multi_head_att_{n}_fc.b_0"] = r(d, d), r(d)
        a[f"{p}_ffn_fc_0.w_0"], a[f"{p}_ffn_fc_0.b_0"] = r(d, c.ffn_dim), r(c.ffn_dim)
        a[f"{p}_ffn_fc_1.w_0"], a[f"{p}_ffn_fc_1.b_0"] = r(c.ffn_dim, d), r(d)
        for n in ("post_att", "post_ffn"):
            a[f"{p}_{n}_layer_norm_scale"], a[f"{p}_{n}_layer_norm_bias"] = 1 + r(d), r(d)
    return a


def write_dir(path, arrays):
    path.mkdir(exist_ok=True)
    for name, array in arrays.items():
        write_lod_tensor(path / name, array)
    write_lod_tensor(path / "learning_rate_0", np.array([1e-4], np.float32))  # optimizer state: ignored
    return path


def plain_unimo(a, c, text_ids, feats, boxes):
    """UNIMO's forward written out from the arrays: [IMG] + regions then text, post-LN layers, ReLU poolers."""
    t = {k: torch.from_numpy(v) for k, v in a.items()}
    ln = lambda x, n: F.layer_norm(x, (c.dim,), t[f"{n}_layer_norm_scale"], t[f"{n}_layer_norm_bias"], 1e-5)  # noqa: E731
    fc = lambda x, n: x @ t[f"{n}.w_0"] + t[f"{n}.b_0"]  # noqa: E731
    pos = torch.arange(2, 2 + text_ids.shape[1])
    text = ln(t["word_embedding"][text_ids] + t["pos_embedding"][pos], "pre_encoder")
    feats = torch.cat([feats.mean(1, keepdim=True), feats], 1)
    boxes = torch.cat([torch.tensor([0.0, 0, 1, 1]).expand(feats.shape[0], 1, 4), boxes], 1)
    area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))[..., None]
    vision = ln(fc(feats, "image_emb") + fc(torch.cat([boxes, area], -1), "image_loc"), "v_pre_encoder")
    x = torch.cat([vision, text], 1)
    b, n, _ = x.shape
    h, dh = c.num_heads, c.dim // c.num_heads
    for i in range(c.num_layers):
        p = f"encoder_layer_{i}_multi_head_att"
        q, k, v = (fc(x, f"{p}_{m}_fc").view(b, n, h, dh).transpose(1, 2) for m in ("query", "key", "value"))
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(dh)).softmax(-1) @ v
        x = ln(
            x + fc(att.transpose(1, 2).reshape(b, n, c.dim), f"{p}_output_fc"), f"encoder_layer_{i}_post_att"
        )
        ffn = fc(F.gelu(fc(x, f"encoder_layer_{i}_ffn_fc_0")), f"encoder_layer_{i}_ffn_fc_1")
        x = ln(x + ffn, f"encoder_layer_{i}_post_ffn")
    r = vision.shape[1]
    pooled_text = F.relu(fc(x[:, r], "pooled_fc_text"))
    pooled_image = F.relu(fc(x[:, 0], "pooled_fc_image"))
    lm = (
        ln(F.gelu(fc(x[:, r:], "mask_lm_trans_fc")), "mask_lm_trans") @ t["word_embedding"].T
        + t["mask_lm_out_fc.b_0"]
    )
    return x, pooled_text, pooled_image, lm


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(1)
    c = unimo_tiny()
    xy = torch.rand(2, 4, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.3], -1)
    return (
        torch.randint(4, c.vocab_size, (2, 5), generator=g),
        torch.randn(2, 4, c.region_feat_dim, generator=g),
        boxes,
    )


def test_round_trip_matches_a_plain_recomputation(tmp_path, inputs):
    c = unimo_tiny()
    arrays = official_arrays(c)
    path = write_dir(tmp_path / "params", arrays)
    assert is_persistables_dir(path)
    text_ids, feats, boxes = inputs
    with pytest.raises(CheckpointError, match=r"no pre-training head weights for \['region'\]"):
        load_unimo_paddle_pretraining(path, c)
    pt = load_unimo_paddle_pretraining(path, c, allow_new_heads=True)
    assert pt.new_heads == ["region"] and pt.encoder.paddle_unused == ["learning_rate_0"]
    with torch.no_grad():
        out = pt(text_ids, region_feats=feats, region_boxes=boxes)
    x, pooled_text, pooled_image, lm = plain_unimo(arrays, c, text_ids, feats, boxes)
    enc = out.encoded
    torch.testing.assert_close(torch.cat([enc.vision, enc.text], 1), x, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(enc.pooled, pooled_text, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(enc.pooled_vision, pooled_image, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.mlm_logits, lm, atol=1e-4, rtol=1e-4)


def test_fp16_files_packed_dims_and_lod_levels_read_exactly(tmp_path):
    a = np.arange(6, dtype=np.float16).reshape(2, 3) / 8
    write_lod_tensor(tmp_path / "x", a, lod=[[0, 1, 2]], packed=True)
    got = read_lod_tensor(tmp_path / "x")
    assert got.dtype == np.float16 and np.array_equal(got, a)


def test_errors_name_the_file(tmp_path):
    c = unimo_tiny()
    arrays = official_arrays(c)
    path = write_dir(tmp_path / "p", arrays)
    name = "encoder_layer_1_ffn_fc_0.w_0"
    write_lod_tensor(path / name, arrays[name].astype(np.int64))
    with pytest.raises(
        CheckpointError, match=rf"{name}: a parameter must be FP32 or FP16, the file holds int64"
    ):
        load_unimo_paddle(path, c)
    write_lod_tensor(path / name, arrays[name])
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[:-7])
    with pytest.raises(CheckpointError, match=rf"{name}: truncated LoDTensor file"):
        load_unimo_paddle(path, c)
    (path / name).unlink()
    with pytest.raises(CheckpointError, match=rf"missing Paddle parameters \['{name}'\]"):
        load_unimo_paddle(path, c)
    write_lod_tensor(path / name, arrays[name])
    write_lod_tensor(path / "pooled_fc_text.w_0", arrays["pooled_fc_text.w_0"][:, :3])
    with pytest.raises(CheckpointError, match="shape mismatch for text_pooler.dense.weight"):
        load_unimo_paddle(path, c)
    write_lod_tensor(path / "pooled_fc_text.w_0", arrays["pooled_fc_text.w_0"])
    with pytest.raises(CheckpointError, match=r"encoder parameters \['encoder_layer_1_ffn_fc_0.b_0'"):
        load_unimo_paddle(path, c.replace(num_layers=1))
    (path / "word_embedding").write_bytes(struct.pack("<I", 1))
    with pytest.raises(CheckpointError, match="word_embedding: LoDTensor version 1"):
        load_unimo_paddle(path, c)


def test_convert_command_reads_persistables_with_the_official_config(tmp_path, inputs):
    import json

    import mmbert
    from mmbert.cli import main
    from mmbert.models.unimo import config_from_unimo

    official = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2, "vocab_size": 100,
                "max_position_embeddings": 66, "image_embedding_size": 16, "image_class_size": 11,
                "max_img_len": 6, "hidden_act": "gelu", "type_vocab_size": 0, "overlap_ratio": 0.4}  # fmt: skip
    (tmp_path / "unimo.json").write_text(json.dumps(official))
    c = config_from_unimo(tmp_path / "unimo.json")
    assert c.ffn_dim == 128
    arrays = official_arrays(c)
    src = write_dir(tmp_path / "params", arrays)
    args = ["convert", str(src), str(tmp_path / "ours"), "--config", str(tmp_path / "unimo.json")]
    assert main(args) == 0  # the region heads were never released: the encoder is converted
    text_ids, feats, boxes = inputs
    with torch.no_grad():
        enc = mmbert.load_model(tmp_path / "ours")(text_ids, region_feats=feats, region_boxes=boxes)
    x = plain_unimo(arrays, c, text_ids, feats, boxes)[0]
    torch.testing.assert_close(torch.cat([enc.vision, enc.text], 1), x, atol=1e-5, rtol=1e-4)
    # the library entry points detect the layout; a config JSON beside the parameters is found
    (src / "unimo.json").write_text(json.dumps(official))
    pt = mmbert.load_pretraining(src, allow_new_heads=True)
    assert pt.new_heads == ["region"]
    with torch.no_grad():
        lm = pt(text_ids, region_feats=feats, region_boxes=boxes).mlm_logits
    torch.testing.assert_close(lm, plain_unimo(arrays, c, text_ids, feats, boxes)[3], atol=1e-4, rtol=1e-4)
    (src / "unimo.json").unlink()
    with pytest.raises(CheckpointError, match="carry no model config"):
        mmbert.load_model(src)
