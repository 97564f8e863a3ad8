"""models/stylegan2.py: mapping, synthesis and Generator; state_dict layout of StyleGAN2-ADA."""

import math

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.models import Discriminator, Generator, make_networks
from stylegan_fast.models.stylegan2 import MappingNetwork, SynthesisLayer, ToRGBLayer
from stylegan_fast.ops import _dispatch
from stylegan_fast.ops.upfirdn2d import upfirdn2d

# --- Parameter counts, from the architecture description alone -------------------------


def _channels(res, channel_base, channel_max):
    return min(channel_base // res, channel_max)


def expected_generator_counts(res, z_dim=512, w_dim=512, map_layers=8, channel_base=32768, channel_max=512, rgb=3):
    """(parameters, buffer elements) of a StyleGAN2 skip generator."""
    ch = lambda r: _channels(r, channel_base, channel_max)  # noqa: E731
    params = (z_dim * w_dim + w_dim) + (map_layers - 1) * (w_dim * w_dim + w_dim)  # mapping fc: weight, bias
    buffers = w_dim  # w_avg

    def modconv(cin, cout, k, noise):  # affine (weight, bias), weight, bias, noise_strength
        return (w_dim * cin + cin) + cout * cin * k * k + cout + (1 if noise else 0)

    r = 4
    while r <= res:
        params += ch(4) * 4 * 4 if r == 4 else modconv(ch(r // 2), ch(r), 3, noise=True)  # const, or conv0
        params += modconv(ch(r), ch(r), 3, noise=True)  # conv1
        params += modconv(ch(r), rgb, 1, noise=False)  # torgb
        convs = 1 if r == 4 else 2
        buffers += 16 + convs * (16 + r * r)  # the block's and each conv's 4x4 filter, each conv's noise_const
        r *= 2
    return params, buffers


def expected_discriminator_counts(res, channel_base=32768, channel_max=512, rgb=3):
    """(parameters, buffer elements) of a StyleGAN2 resnet discriminator with a 1-channel mbstd."""
    ch = lambda r: _channels(r, channel_base, channel_max)  # noqa: E731
    conv = lambda cin, cout, k, bias=True: cout * cin * k * k + (cout if bias else 0)  # noqa: E731
    params = conv(rgb, ch(res), 1)  # fromrgb of the first block
    buffers = 16
    r = res
    while r >= 8:
        params += conv(ch(r), ch(r), 3) + conv(ch(r), ch(r // 2), 3) + conv(ch(r), ch(r // 2), 1, bias=False)
        buffers += 4 * 16  # the block's filter; conv0, conv1 and skip each hold one
        r //= 2
    c4 = ch(4)
    params += conv(c4 + 1, c4, 3) + (c4 * 16 * c4 + c4) + (c4 + 1)  # conv, fc, out
    buffers += 16  # conv's filter
    return params, buffers


def _count(module):
    return sum(p.numel() for p in module.parameters()), sum(b.numel() for b in module.buffers())


@pytest.mark.parametrize("resolution", [256, 1024])
def test_parameter_and_buffer_counts_of_config_stylegan2(resolution):
    G, D = make_networks("stylegan2", resolution)
    assert _count(G) == expected_generator_counts(resolution)
    assert _count(D) == expected_discriminator_counts(resolution)


def test_counts_equal_those_printed_by_stylegan2_ada_training():
    # StyleGAN2-ADA's train.py prints these for its 1024x1024 networks: G with 8 mapping
    # layers (config F) has 30,370,060 parameters; with 2, 28,794,124 and 2,797,104 buffer
    # elements; D has 29,012,513 parameters and 544 buffer elements.
    assert expected_generator_counts(1024)[0] == 30370060
    assert expected_generator_counts(1024, map_layers=2) == (28794124, 2797104)
    assert expected_discriminator_counts(1024) == (29012513, 544)


# --- state_dict names: what the importer of official checkpoints relies on ----------------


def expected_generator_keys(res, map_layers, c_dim):
    keys = {"mapping.w_avg"} | {f"mapping.fc{i}.{p}" for i in range(map_layers) for p in ("weight", "bias")}
    if c_dim:
        keys |= {"mapping.embed.weight", "mapping.embed.bias"}
    layer = ("weight", "bias", "noise_strength", "noise_const", "resample_filter", "affine.weight", "affine.bias")
    torgb = ("weight", "bias", "affine.weight", "affine.bias")
    r = 4
    while r <= res:
        b = f"synthesis.b{r}"
        keys |= {f"{b}.resample_filter"} | {f"{b}.torgb.{p}" for p in torgb} | {f"{b}.conv1.{p}" for p in layer}
        keys |= {f"{b}.const"} if r == 4 else {f"{b}.conv0.{p}" for p in layer}
        r *= 2
    return keys


def expected_discriminator_keys(res, c_dim, mapping_layers=8):
    conv = ("weight", "bias", "resample_filter")
    keys = {f"b{res}.fromrgb.{p}" for p in conv}
    r = res
    while r >= 8:
        keys |= {f"b{r}.resample_filter", f"b{r}.skip.weight", f"b{r}.skip.resample_filter"}
        keys |= {f"b{r}.conv{i}.{p}" for i in (0, 1) for p in conv}
        r //= 2
    keys |= {f"b4.conv.{p}" for p in conv} | {f"b4.{fc}.{p}" for fc in ("fc", "out") for p in ("weight", "bias")}
    if c_dim:
        keys |= {f"mapping.{fc}.{p}" for fc in ["embed"] + [f"fc{i}" for i in range(mapping_layers)] for p in ("weight", "bias")}
    return keys


@pytest.mark.parametrize("c_dim", [0, 3])
def test_state_dict_names_are_stylegan2_adas(make_tiny, tiny, c_dim):
    G, D = make_tiny(resolution=16, c_dim=c_dim)
    assert set(G.state_dict()) == expected_generator_keys(16, tiny["map_layers"], c_dim)
    assert set(D.state_dict()) == expected_discriminator_keys(16, c_dim)
    assert G.state_dict()["synthesis.b8.conv0.weight"].shape == (16, 16, 3, 3)
    assert G.state_dict()["synthesis.b16.conv1.noise_const"].shape == (16, 16)


def test_generator_builds_from_official_style_init_kwargs():
    # The kwargs StyleGAN2-ADA pickles keep for config F at 64x64 (as the importer will pass them).
    kwargs = dict(
        z_dim=512, c_dim=0, w_dim=512, img_resolution=64, img_channels=3,
        mapping_kwargs=dict(num_layers=8),
        synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
    )
    G = Generator(**kwargs)
    assert (G.num_ws, G.z_dim, G.w_dim, G.img_resolution, G.img_channels) == (10, 512, 512, 64, 3)
    # The 4 highest resolutions in float16; 4x4 always float32.
    assert [getattr(G.synthesis, f"b{res}").use_fp16 for res in (4, 8, 16, 32, 64)] == [False, True, True, True, True]


# --- Mapping network ------------------------------------------------------------------------


def test_mapping_normalises_z_and_the_label_embedding(make_tiny):
    G, _ = make_tiny(c_dim=3)
    G.eval()
    z, c = torch.randn(4, 16), torch.randn(4, 3)
    ws = G.mapping(z, c)
    assert ws.shape == (4, G.num_ws, 16)
    assert torch.equal(ws[:, 0], ws[:, -1])  # broadcast
    torch.testing.assert_close(G.mapping(z * 7.5, c), ws)  # z is normalised
    torch.testing.assert_close(G.mapping(z, c * 0.1), ws)  # so is the label embedding
    assert not torch.allclose(G.mapping(z, torch.randn(4, 3)), ws)


def test_truncation_psi_zero_gives_w_avg_and_cutoff_truncates_only_the_first_ws(make_tiny):
    G, _ = make_tiny(resolution=32)
    G.eval()
    w_avg = torch.randn(16)
    G.mapping.w_avg.copy_(w_avg)
    z = torch.randn(3, 16)
    ws = G.mapping(z, None)
    torch.testing.assert_close(G.mapping(z, None, truncation_psi=0), w_avg.expand(3, G.num_ws, 16))
    cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], w_avg + 0.5 * (ws[:, :3] - w_avg))
    assert torch.equal(cut[:, 3:], ws[:, 3:])


def test_w_avg_is_tracked_in_training_only(make_tiny):
    G, _ = make_tiny()
    beta = G.mapping.w_avg_beta
    z = torch.randn(4, 16)
    start = torch.randn(16)
    G.mapping.w_avg.copy_(start)

    G.mapping.eval()
    G.mapping(z, None)
    assert torch.equal(G.mapping.w_avg, start)

    G.mapping.train()
    G.mapping(z, None, update_emas=False)
    assert torch.equal(G.mapping.w_avg, start)
    w = G.mapping(z, None)[:, 0]
    torch.testing.assert_close(G.mapping.w_avg, beta * start + (1 - beta) * w.mean(dim=0))

    G.eval()
    before = G.mapping.w_avg.clone()
    G(z, None, update_emas=True)  # explicit request, as when generating fakes for D
    assert not torch.equal(G.mapping.w_avg, before)


def test_discriminator_label_mapping_has_no_w_avg_and_refuses_truncation():
    mapping = MappingNetwork(z_dim=0, c_dim=3, w_dim=8, num_ws=None, w_avg_beta=None, num_layers=2)
    assert "w_avg" not in mapping.state_dict()
    c = torch.randn(2, 3)
    assert mapping(None, c).shape == (2, 8)
    with pytest.raises(ValueError, match="truncation needs w_avg"):
        mapping(None, c, truncation_psi=0.5)


def test_mapping_rejects_a_wrong_latent_shape(make_tiny):
    G, _ = make_tiny()
    with pytest.raises(ValueError, match=r"z must have shape \[\*, 16\]"):
        G(torch.randn(2, 15), None)


# --- Synthesis: which w each layer reads, style mixing, noise ------------------------------


def test_each_layer_reads_its_own_w(make_tiny):
    G, _ = make_tiny(resolution=32)
    seen = {}
    for name, module in G.synthesis.named_modules():
        if isinstance(module, (SynthesisLayer, ToRGBLayer)):
            module.affine.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0]))
    ws = torch.randn(2, G.num_ws, 16)
    G.synthesis(ws)

    # The convolutions read ws[0], ws[1], ... in order; a block's ToRGB reads the w of the
    # next convolution (the last ToRGB the last w).
    expected, conv = {}, 0
    for res in (4, 8, 16, 32):
        for name in ["conv1"] if res == 4 else ["conv0", "conv1"]:
            expected[f"b{res}.{name}"] = conv
            conv += 1
        expected[f"b{res}.torgb"] = conv
    assert G.num_ws == conv + 1 == 8
    assert set(seen) == set(expected)
    for name, index in expected.items():
        assert torch.equal(seen[name], ws[:, index]), name


def _block_outputs(G, ws):
    outputs = {}
    hooks = [
        getattr(G.synthesis, f"b{res}").register_forward_hook(lambda m, a, out, res=res: outputs.__setitem__(res, out))
        for res in G.synthesis.block_resolutions
    ]
    image = G.synthesis(ws, noise_mode="const")
    for hook in hooks:
        hook.remove()
    return outputs, image


def test_style_mixing_changes_only_what_comes_after_the_crossover(make_tiny):
    G, _ = make_tiny(resolution=32)
    G.eval()
    w1, w2, w3 = (G.mapping(torch.randn(2, 16), None) for _ in range(3))
    crossover = 4  # ws[0..3] feed b4 and b8 entirely (and b16.conv0)
    mixed_a, image_a = _block_outputs(G, torch.cat([w1[:, :crossover], w2[:, crossover:]], dim=1))
    mixed_b, image_b = _block_outputs(G, torch.cat([w1[:, :crossover], w3[:, crossover:]], dim=1))
    for res in (4, 8):
        assert torch.equal(mixed_a[res][0], mixed_b[res][0]) and torch.equal(mixed_a[res][1], mixed_b[res][1])
    assert not torch.allclose(mixed_a[16][0], mixed_b[16][0])
    assert not torch.allclose(image_a, image_b)
    # A crossover after the last w is no mixing at all.
    torch.testing.assert_close(G.synthesis(w1, noise_mode="const"), _block_outputs(G, w1)[1])


def test_upsampling_synthesis_layer_convolves_with_the_flipped_demodulated_kernel():
    # The convention official weights were trained with (see test_layers for Conv2dLayer).
    torch.manual_seed(0)
    layer = SynthesisLayer(3, 4, w_dim=5, resolution=10, up=2)
    with torch.no_grad():
        layer.affine.weight.zero_()  # every style is the affine's bias, 1
    x = torch.randn(2, 3, 5, 5)
    weight = layer.weight * (layer.weight.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
    upsampled = upfirdn2d(x, layer.resample_filter, up=2, padding=[3, 2, 3, 2], gain=4)
    expected = F.leaky_relu(F.conv2d(upsampled, weight.flip([2, 3])), 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x, torch.randn(2, 5), noise_mode="none"), expected, rtol=1e-4, atol=1e-5)


def _with_noise(G, strength=0.5):
    with torch.no_grad():
        for module in G.modules():
            if isinstance(module, SynthesisLayer):
                module.noise_strength.fill_(strength)
    return G


def test_noise_modes(make_tiny):
    G, _ = make_tiny()
    G = _with_noise(G).eval()
    ws = G.mapping(torch.randn(2, 16), None)
    const = G.synthesis(ws, noise_mode="const")
    none = G.synthesis(ws, noise_mode="none")
    assert torch.equal(const, G.synthesis(ws, noise_mode="const"))
    assert torch.equal(none, G.synthesis(ws, noise_mode="none"))
    assert not torch.allclose(const, none)
    assert not torch.allclose(G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random"))
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        G.synthesis(ws, noise_mode="fixed")


@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
def test_fused_and_unfused_modulated_convolutions_give_the_same_image(make_tiny, architecture):
    G, _ = make_tiny(g_architecture=architecture)
    G = _with_noise(G).eval()
    ws = G.mapping(torch.randn(3, 16), None)
    fused = G.synthesis(ws, noise_mode="const", fused_modconv=True)
    unfused = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-5)
    assert fused.abs().mean() > 1e-3


@pytest.mark.parametrize("resolution", [4, 8, 32])
@pytest.mark.parametrize("architecture", ["skip", "resnet", "orig"])
def test_generator_output_shape_and_dtype(tiny, resolution, architecture):
    G = Generator(16, 0, 16, resolution, 1, synthesis_kwargs=dict(channel_base=128, channel_max=8, architecture=architecture))
    image = G(torch.randn(2, 16), None, truncation_psi=0.7, truncation_cutoff=2, noise_mode="none")
    assert image.shape == (2, 1, resolution, resolution) and image.dtype == torch.float32
    assert G.num_ws == 2 * resolution.bit_length() - 4


def test_generator_rejects_a_resolution_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="img_resolution must be a power of two >= 4, got 48"):
        Generator(16, 0, 16, 48, 3)


# --- Mixed precision, gradients, impl --------------------------------------------------------


def _dtypes_of_blocks(network, run):
    dtypes = {}
    hooks = [
        getattr(network, f"b{res}").register_forward_hook(lambda m, a, out, res=res: dtypes.__setitem__(res, out[0].dtype))
        for res in network.block_resolutions
    ]
    result = run()
    for hook in hooks:
        hook.remove()
    return dtypes, result


@pytest.mark.parametrize("mp_dtype, tolerance", [("float16", 0.02), ("bfloat16", 0.1)])
def test_reduced_precision_runs_the_top_resolutions_and_stays_close_to_float32(make_tiny, mp_dtype, tolerance):
    dtype = getattr(torch, mp_dtype)
    G, D = make_tiny(resolution=32, num_fp16_res=2, mp_dtype=mp_dtype, conv_clamp=256)
    z = torch.randn(4, 16)
    dtypes, image = _dtypes_of_blocks(G.synthesis, lambda: G(z, None, noise_mode="const"))
    assert dtypes == {4: torch.float32, 8: torch.float32, 16: dtype, 32: dtype}
    reference = G(z, None, noise_mode="const", force_fp32=True)
    assert image.dtype == torch.float32 and image.isfinite().all()
    assert (image - reference).abs().max() <= tolerance * reference.abs().max()

    dtypes, score = _dtypes_of_blocks(D, lambda: D(image, None))
    assert dtypes == {32: dtype, 16: dtype, 8: torch.float32}
    assert score.dtype == torch.float32 and score.isfinite().all()
    score.sum().backward()
    assert all(p.grad.isfinite().all() for p in D.parameters())


def test_channels_last_in_reduced_precision(make_tiny):
    G, D = make_tiny(resolution=16, num_fp16_res=2)
    G = Generator(**{**G.init_kwargs, "synthesis_kwargs": {**G.init_kwargs["synthesis_kwargs"], "fp16_channels_last": True}})
    D = Discriminator(**{**D.init_kwargs, "block_kwargs": {"fp16_channels_last": True}})
    assert G.synthesis.b16.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    score = D(G(torch.randn(4, 16), None), None)
    assert score.shape == (4, 1) and score.isfinite().all()


@pytest.mark.parametrize("g_architecture, d_architecture", [("skip", "resnet"), ("resnet", "skip"), ("orig", "orig")])
def test_gradients_reach_every_parameter_of_G_and_D(make_tiny, g_architecture, d_architecture):
    G, D = make_tiny(resolution=16, c_dim=3, g_architecture=g_architecture, d_architecture=d_architecture)
    c = torch.randn(4, 3)
    D(G(torch.randn(4, 16), c), c).sum().backward()
    for name, p in [*G.named_parameters(prefix="G"), *D.named_parameters(prefix="D")]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_impl_reaches_every_op_call(monkeypatch, make_tiny):
    monkeypatch.delenv(_dispatch.ENV_VAR, raising=False)
    requested = []
    resolve = _dispatch.resolve

    def spy(op, impl, device):
        requested.append((op, impl))
        return resolve(op, impl, device)

    monkeypatch.setattr(_dispatch, "resolve", spy)
    for cfg in ("stylegan2", "stylegan1"):
        G, D = make_tiny(cfg, resolution=16, c_dim=2, d_architecture="skip", impl="ref")
        c = torch.randn(4, 2)
        D(G(torch.randn(4, 16), c), c).sum().backward()
    assert {op for op, _ in requested} == {"bias_act", "upfirdn2d", "modulated_conv2d"}
    assert {impl for _, impl in requested} == {"ref"}


@pytest.mark.parametrize(
    "architecture, variants",
    [("skip", False), ("resnet", False), ("skip", True)],
    ids=["skip", "resnet", "skip-transposed-up-triton-wgrad"],
)
def test_triton_kernels_give_the_reference_images_and_gradients(architecture, variants, monkeypatch):
    # Every op of G has a Triton kernel; without a GPU they run in the Triton interpreter
    # (tests/conftest.py), hence 8x8 images and 16 channels (the smallest dot tile). With
    # `variants`, the modulated convolutions take candidates other than the default rule, as
    # the tuner may choose them: the up layers by the transposed convolution first, the others
    # with the Triton weight gradient.
    calls = []
    if variants:
        from stylegan_fast.ops.triton import _wgrad
        from stylegan_fast.ops.triton import modulated_conv2d as modconv_kernels

        for module, name in ((modconv_kernels, "_convolve_then_upsample"), (_wgrad, "_weight_grad_op")):
            original = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture=architecture))  # fmt: skip
    torch.manual_seed(0)
    reference = Generator(**kwargs, impl="ref").to(device)
    triton = Generator(**kwargs, impl="triton").to(device)
    triton.load_state_dict(reference.state_dict())
    if variants:
        for module in triton.modules():
            if isinstance(module, SynthesisLayer):
                module.impl = "triton:up_transposed" if module.up > 1 else "triton:triton_wgrad"
            elif isinstance(module, ToRGBLayer):
                module.impl = "triton:triton_wgrad"
    z = torch.randn(2, 8, device=device)
    results = []
    for G in (reference, triton):
        img = G(z, None, noise_mode="const")
        img.square().sum().backward()
        results.append([img] + [p.grad for p in G.parameters()])
    for ref, tri in zip(*results):
        torch.testing.assert_close(tri, ref, rtol=1e-4, atol=1e-5)
    if variants:  # both paths ran
        assert {"_convolve_then_upsample", "_weight_grad_op"} <= set(calls)


@pytest.mark.gpu
@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_cuda_kernels_give_the_reference_images_and_gradients(architecture):
    # impl='cuda': every op of G through csrc/ (modulated_conv2d as cuDNN's convolution between
    # passes of the epilogue kernel), float32; first-order gradients and the second-order ones
    # of path-length regularisation (the gradient of a function of the gradient w.r.t. ws).
    kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=256, channel_max=32, architecture=architecture))  # fmt: skip
    torch.manual_seed(0)
    reference = Generator(**kwargs, impl="ref").cuda()
    kernels = Generator(**kwargs, impl="cuda").cuda()
    kernels.load_state_dict(reference.state_dict())
    z = torch.randn(4, 8, device="cuda")
    results = []
    for G in (reference, kernels):
        ws = G.mapping(z, None).detach().requires_grad_()
        img = G.synthesis(ws, noise_mode="const")
        (d_ws,) = torch.autograd.grad((img * img.detach().sin()).sum(), ws, create_graph=True)
        (d_ws.square().sum() + img.square().sum()).backward()
        results.append([img, d_ws, ws.grad] + [p.grad for p in G.synthesis.parameters()])
    for ref, cuda in zip(*results):
        torch.testing.assert_close(cuda, ref, rtol=1e-4, atol=1e-5)


def test_triton_kernels_run_channels_last_reduced_precision_blocks_like_the_reference(make_tiny):
    # The channels_last config: the top block of G and of D in float16, channels_last, through
    # the Triton kernels (the interpreter without a GPU), against the same networks in float32.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    G, D = make_tiny(resolution=8, num_fp16_res=1, channels_last=True, impl="triton")
    G, D = G.to(device), D.to(device)
    z = torch.randn(2, 16, device=device)
    layouts = []
    hook = G.synthesis.b8.register_forward_hook(
        lambda m, a, out: layouts.append((out[0].dtype, out[0].is_contiguous(memory_format=torch.channels_last)))
    )
    image = G(z, None, noise_mode="const")
    hook.remove()
    assert layouts == [(torch.float16, True)]
    reference = G(z, None, noise_mode="const", force_fp32=True)
    assert (image - reference).abs().max() <= 0.02 * reference.abs().max()
    score, score32 = D(image, None), D(image, None, force_fp32=True)
    assert (score - score32).abs().max() <= 0.02 * score32.abs().max() + 1e-3


def compiled_networks_match_eager(make_tiny, backend, device, rtol, atol):
    """torch.compile(fullgraph=True) of G and of D with the Triton kernels: one graph each (a
    graph break raises), the same images, scores and gradients as the eager networks, and no
    warning from Dynamo (the kernel choice is a constant of the graph, not traced)."""
    import warnings

    torch._dynamo.reset()
    G, D = make_tiny(resolution=8, impl="triton")
    G, D = G.to(device), D.to(device)
    z = torch.randn(2, 16, device=device)
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for g, d in ((G, D), (torch.compile(G, fullgraph=True, backend=backend),
                              torch.compile(D, fullgraph=True, backend=backend))):  # fmt: skip
            G.zero_grad(set_to_none=True)
            image = g(z, None, noise_mode="const")
            score = d(image, None)
            score.sum().backward()
            results.append([image, score] + [p.grad for p in G.parameters()])
    dynamo_warnings = [str(w.message) for w in caught if "dynamo" in str(w.filename).lower()]
    assert not dynamo_warnings, dynamo_warnings
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=rtol, atol=atol)


def test_compile_fullgraph_of_G_and_D_with_the_kernels(make_tiny):
    # Dynamo only (backend 'eager'): AOTAutograd and Inductor would run the kernels on
    # fake-backed storage, which the interpreter cannot; the GPU test below runs Inductor.
    # The same ops in the same order: equal.
    compiled_networks_match_eager(make_tiny, "eager", "cuda" if torch.cuda.is_available() else "cpu", 0, 0)


@pytest.mark.gpu
def test_compile_fullgraph_of_G_and_D_with_the_kernels_inductor(make_tiny):
    # Inductor fuses and reorders the ATen parts (demodulation, sums) in float32: the tolerance
    # of the model test that compares the kernels with the reference.
    compiled_networks_match_eager(make_tiny, "inductor", "cuda", 1e-4, 1e-5)
