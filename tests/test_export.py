"""ONNX export: PyTorch and ONNX Runtime agree chunk by chunk; metadata describes the model."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model_export.export import export  # noqa: E402
from model_export.model import AttentionModel, ModelConfig  # noqa: E402
from model_export.parity import decoder_max_error, encoder_max_error  # noqa: E402
from model_export.train import SIZES  # noqa: E402
from service.pipeline.model_info import ModelInfo, create_session  # noqa: E402
from service.pipeline.tokenizer import Tokenizer  # noqa: E402


@pytest.fixture(scope="module", params=["conv1d", "conv2d"])
def exported(tmp_path_factory, request):
    torch.manual_seed(3)
    model = AttentionModel(ModelConfig(vocab=list(Tokenizer().vocab), frontend=request.param,
                                       **SIZES["tiny"])).eval()
    with torch.no_grad():  # non-trivial normalization so it is exercised
        model.encoder.feat_mean.uniform_(5, 12)
        model.encoder.feat_inv_std.uniform_(0.2, 0.5)
    out = tmp_path_factory.mktemp("export")
    export(model, out, {"training_data": "random"})
    return model, out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encoder_parity_chunked_random_batches(exported, seed):
    model, out = exported
    assert encoder_max_error(model, out, np.random.default_rng(seed)) < 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoder_step_parity_random_batches(exported, seed):
    model, out = exported
    assert decoder_max_error(model, out, np.random.default_rng(seed)) < 1e-4


def test_streaming_encoder_equals_whole_utterance(exported):
    model, _ = exported
    feats = torch.randn(2, 48, 80) + 8
    with torch.no_grad():
        whole = model.encoder(feats)
        state, parts = model.encoder.init_state(2), []
        for a, b in [(0, 4), (4, 20), (20, 24), (24, 48)]:
            y, state = model.encoder.streaming_forward(feats[:, a:b], state)
            parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=1e-5)


def test_metadata_round_trip(exported):
    model, out = exported
    info = ModelInfo.from_session(create_session(out / "encoder.onnx"))
    assert info.vocab == tuple(model.cfg.vocab)
    assert (info.window_back, info.window_size) == (model.cfg.window_back, model.cfg.window_size)
    assert info.frame_shift_s == pytest.approx(0.04)
    assert info.features.num_mel_bins == 80
    assert info.metadata["stt.training_data"] == "random"
    dec_info = ModelInfo.from_session(create_session(out / "decoder.onnx"))
    assert dec_info == info


def test_the_service_encoder_streams_either_front_end_like_pytorch(exported):
    """The service builds zero states from the metadata alone (conv2d caches are 4-d) and its
    fixed-chunk streaming gives the frames of one whole-utterance PyTorch pass."""
    from service.pipeline.encoder import EncoderGraph, encode_offline
    from service.pipeline.features import compute_features

    model, out = exported
    sess = create_session(out / "encoder.onnx")
    graph = EncoderGraph(sess, ModelInfo.from_session(sess))
    audio = (np.random.default_rng(0).normal(size=16000 * 2) * 0.1).astype(np.float32)
    store = encode_offline(graph, audio, chunk_frames=12)
    feats = compute_features(audio)
    feats = np.pad(feats, ((0, -len(feats) % 4), (0, 0)))
    with torch.no_grad():
        whole = model.encoder(torch.from_numpy(feats)[None])[0].numpy()
    n = min(len(whole), store.length)
    assert n >= 45
    np.testing.assert_allclose(store.windows(np.array([0]), n)[0][0], whole[:n], atol=1e-4)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_graphs_keep_the_metadata_and_track_the_fp32_model(exported, tmp_path, reduce_range):
    """int8 dynamic quantization; `reduce_range` keeps weights in 7 bits (no vpmaddubsw saturation
    on x86 CPUs without VNNI), which the stored int8 weights show."""
    import onnx
    from onnx import numpy_helper

    from model_export.export import quantize

    model, out = exported
    quantize(out, tmp_path, reduce_range)
    for name in ("encoder.onnx", "decoder.onnx"):
        info = ModelInfo.from_session(create_session(tmp_path / name))
        assert info.vocab == tuple(model.cfg.vocab)
        assert info.metadata["stt.quantization"] == ("int8-dynamic-7bit" if reduce_range else "int8-dynamic")
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / name)).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and t.dims and np.prod(t.dims) > 1]
        assert weights, f"{name}: nothing was quantized"
        peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
        assert peak <= 64 if reduce_range else peak > 64, peak
    assert encoder_max_error(model, tmp_path, np.random.default_rng(0)) < 0.1  # measured 0.01-0.04
    assert decoder_max_error(model, tmp_path, np.random.default_rng(0)) < 0.1  # measured 0.01-0.04
