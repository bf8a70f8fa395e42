r"""The U-Net ε-network for images.

Paper: Ho, Jain, Abbeel (2020), §4 and Appendix B: a U-Net on a Wide-ResNet / PixelCNN++
backbone with GroupNorm, the Transformer sinusoidal embedding of t added into every residual
block, self-attention at low resolution, dropout, and (Ho et al.'s code) zero-initialised final
convolutions. The blocks are in :mod:`ddpm_ref.nn.blocks`.

    temb = Linear(SiLU(Linear(sinusoidal(t))))                    # (B, temb_dim)
    h = Conv3x3(x)                                                # (B, ch, H, W)
    down, level i = 0..L-1:   num_res_blocks x [ResBlock (+ attention)] -> push skip;
                              Conv3x3 stride 2 between levels
    middle:                   ResBlock, (attention), ResBlock
    up, level i = L-1..0:     num_res_blocks x [concat(h, pop skip) -> ResBlock (+ attention)];
                              nearest 2x + Conv3x3 between levels
    eps_theta = Conv3x3(SiLU(GN(h)))                              # (B, C * out_mult, H, W)

Every step is a layer pair of the network's tier (``config.fast``: :mod:`ddpm_ref.nn.fast`, else
:mod:`ddpm_ref.nn.layers`). ``UNet(**reference_unet_config())`` is the reference U-Net of
docs/benchmarks.md (789,217 parameters; 805,985 with ``attention=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddpm_ref.nn import blocks
from ddpm_ref.nn.base import EmbeddingTable, EpsNetwork, pick_tier


@dataclass
class UNetConfig:
    image_shape: tuple = (1, 28, 28)  # (C, H, W) of one image
    ch: int = 32  # channels at the first level
    ch_mult: tuple = (1, 2, 2)  # level i has ch * ch_mult[i] channels; len = number of levels
    num_res_blocks: int = 1  # residual blocks per level, on the way down and on the way up
    attn_resolutions: tuple = ()  # feature-map heights H at which each res block gets attention
    mid_attention: bool = True  # self-attention between the two middle res blocks
    dropout: float = 0.1  # inside every res block, active only when forward gets an rng
    groups: int = 8  # GroupNorm groups; must divide every channel count
    temb_dim: int = 128  # width of the sinusoidal embedding of t and of the time MLP
    out_mult: int = 1  # 2 doubles the output channels for learned variances
    fast: bool = True  # layers from the engine room nn.fast; False: the plain nn.layers

    def __post_init__(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape: expected (C, H, W), got {self.image_shape}")
        if len(self.ch_mult) < 1 or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult: expected positive multipliers, got {self.ch_mult}")
        for name in ("ch", "num_res_blocks", "groups", "temb_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        if self.temb_dim % 2 or self.temb_dim < 4:
            raise ValueError(f"temb_dim: expected an even integer >= 4, got {self.temb_dim}")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.groups]
        if bad:
            raise ValueError(f"groups: expected a divisor of every channel count, {bad[0]} is not")
        scale = 2 ** (len(self.ch_mult) - 1)
        _, H, W = self.image_shape
        if H % scale or W % scale:
            raise ValueError(
                f"image_shape: H and W must be divisible by 2^(levels - 1) = {scale}, "
                f"got {self.image_shape}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout}")
        if self.out_mult not in (1, 2):
            raise ValueError(f"out_mult: expected 1 or 2 (learned variances), got {self.out_mult}")
        pick_tier(self.fast)  # ValueError unless a bool


def reference_unet_config(attention=False) -> dict:
    """Keyword arguments for the reference U-Net of docs/benchmarks.md: 28x28x1, channels
    32/64/64, one res block per level, GroupNorm(8), t embedded in 128 dims, no dropout; 789,217
    parameters, or 805,985 with ``attention=True`` (one attention block in the middle)."""
    return dict(
        image_shape=(1, 28, 28),
        ch=32,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        mid_attention=bool(attention),
        dropout=0.0,
        groups=8,
        temb_dim=128,
    )


class UNet(EpsNetwork):
    """ε-network for images x of shape (B, C, H, W); see the module docstring for the layout.

    Parameter keys: ``temb.{0,1}.{w,b}`` (the time MLP), ``conv_in``, ``down.<i>.res.<j>``,
    ``down.<i>.attn.<j>``, ``down.<i>.downsample``, ``mid.res.{0,1}``, ``mid.attn``,
    ``up.<i>.res.<j>``, ``up.<i>.attn.<j>``, ``up.<i>.upsample``, ``out.norm``, ``out.conv``,
    with level i = 0 at full resolution; each block's keys are listed in :mod:`blocks`
    (``.norm1.gamma``, ``.conv1.w``, ``.temb.w``, ``.skip.w``, ``.qkv.w`` ...). ``net.plan`` is
    the list of steps forward runs.
    """

    def __init__(self, **config):
        self.config = UNetConfig(**config)
        c = self.config
        self.x_shape = c.image_shape
        self.layers = pick_tier(c.fast)
        self.temb_table = EmbeddingTable(c.temb_dim)
        # The layout as a list of steps; forward runs it, backward runs it in reverse.
        # ("res", prefix, cin, cout) ("attn", prefix, c) ("conv", prefix, cin, cout, stride)
        # ("skip",) push h for the up path; ("concat",) pop a skip; ("upsample",)
        plan, skip_ch = [], []
        h_ch, res = c.ch, c.image_shape[1]
        plan.append(("conv", "conv_in", c.image_shape[0], c.ch, 1))
        for i, mult in enumerate(c.ch_mult):
            for j in range(c.num_res_blocks):
                plan.append(("res", f"down.{i}.res.{j}", h_ch, c.ch * mult))
                h_ch = c.ch * mult
                if res in c.attn_resolutions:
                    plan.append(("attn", f"down.{i}.attn.{j}", h_ch))
                plan.append(("skip",))
                skip_ch.append(h_ch)
            if i < len(c.ch_mult) - 1:
                plan.append(("conv", f"down.{i}.downsample", h_ch, h_ch, 2))
                res //= 2
        plan.append(("res", "mid.res.0", h_ch, h_ch))
        if c.mid_attention:
            plan.append(("attn", "mid.attn", h_ch))
        plan.append(("res", "mid.res.1", h_ch, h_ch))
        for i in reversed(range(len(c.ch_mult))):
            for j in range(c.num_res_blocks):
                plan.append(("concat",))
                cin = h_ch + skip_ch.pop()
                plan.append(("res", f"up.{i}.res.{j}", cin, c.ch * c.ch_mult[i]))
                h_ch = c.ch * c.ch_mult[i]
                if res in c.attn_resolutions:
                    plan.append(("attn", f"up.{i}.attn.{j}", h_ch))
            if i > 0:
                plan.append(("upsample",))
                plan.append(("conv", f"up.{i}.upsample", h_ch, h_ch, 1))
                res *= 2
        self.plan = plan
        self.out_ch = h_ch

    def param_shapes(self) -> dict:
        c = self.config
        shapes = {
            "temb.0.w": (c.temb_dim, c.temb_dim),
            "temb.0.b": (c.temb_dim,),
            "temb.1.w": (c.temb_dim, c.temb_dim),
            "temb.1.b": (c.temb_dim,),
        }
        for step in self.plan:
            if step[0] == "conv":
                _, prefix, cin, cout, stride = step
                shapes.update(blocks.conv_shapes(prefix, cin, cout, 3))
            elif step[0] == "res":
                _, prefix, cin, cout = step
                shapes.update(blocks.resblock_shapes(prefix, cin, cout, c.temb_dim))
            elif step[0] == "attn":
                shapes.update(blocks.attnblock_shapes(step[1], step[2]))
        shapes.update(blocks.norm_shapes("out.norm", self.out_ch))
        shapes.update(blocks.conv_shapes("out.conv", self.out_ch, c.image_shape[0] * c.out_mult, 3))
        return shapes

    def init(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        """Ho et al.'s initialisation: Glorot-uniform weights, zero biases, GroupNorm gamma = 1,
        and zero for the layers that close a residual branch (each res block's conv2, each
        attention block's output projection) and for the output conv, so eps_theta = 0 at init."""
        zero_suffixes = (".conv2.w", ".out.w", "out.conv.w")
        return {
            k: blocks.init_param(rng, k, shape, dtype, zero=k.endswith(zero_suffixes))
            for k, shape in self.param_shapes().items()
        }

    def forward(self, params, x, t, rng=None):
        r"""eps_theta(x_t, t) for a batch of images.

        Args:
            params: from :meth:`init`; x must share their dtype.
            x: (B, C, H, W) noisy images x_t.
            t: (B,) integer timesteps >= 0.
            rng: np.random.Generator to activate dropout (training), or None (evaluation).
        Returns:
            eps_theta: (B, C * out_mult, H, W); cache for :meth:`backward`.
        """
        self.check_inputs(params, x, t)
        L, c = self.layers, self.config
        # time embedding: temb = Linear(SiLU(Linear(sinusoidal(t))))
        emb = self.time_embedding(t, c.temb_dim, x.dtype)  # (B, temb_dim)
        a, c_t0 = L.linear_forward(emb, params["temb.0.w"], params["temb.0.b"])
        a, c_t1 = L.silu_forward(a)
        temb, c_t2 = L.linear_forward(
            a, params["temb.1.w"], params["temb.1.b"]
        )  # (B, temb_dim)
        # every res block reads SiLU(temb): computed once here, its gradients summed in backward
        temb_act, c_t3 = L.silu_forward(temb)
        tape, skips, h = [], [], x
        for step in self.plan:
            kind = step[0]
            if kind == "conv":
                _, prefix, _, _, stride = step
                h, cache = L.conv2d_forward(
                    h, params[prefix + ".w"], params[prefix + ".b"], stride
                )
            elif kind == "res":
                h, cache = blocks.resblock_forward(
                    params, step[1], h, temb_act, c.groups, c.dropout, rng, layers=L
                )
            elif kind == "attn":
                h, cache = blocks.attnblock_forward(params, step[1], h, c.groups, layers=L)
            elif kind == "skip":
                skips.append(h)
                cache = None
            elif kind == "concat":
                h, cache = L.concat_forward(h, skips.pop())  # (B, C_h + C_skip, H, W)
            else:  # upsample
                h, cache = L.upsample2x_forward(h)  # (B, C, 2H, 2W)
            tape.append((step, cache))
        h, c_gn = L.groupnorm_silu_forward(  # SiLU(GN(h))
            h, params["out.norm.gamma"], params["out.norm.beta"], c.groups
        )
        eps_theta, c_out = L.conv2d_forward(h, params["out.conv.w"], params["out.conv.b"])
        cache = ((c_t0, c_t1, c_t2, c_t3), tape, (c_gn, c_out), eps_theta.shape)
        return eps_theta, cache

    def backward(self, d_eps_theta, cache):
        """Gradients of a scalar loss w.r.t. every parameter, given dL/d eps_theta.

        Where a tensor feeds several consumers the gradients add up: SiLU(temb) feeds every res
        block; each skip tensor feeds both the next layer down and a concat on the way up.

        Returns:
            grads: dict with the keys and shapes of params.
        """
        (c_t0, c_t1, c_t2, c_t3), tape, (c_gn, c_out), out_shape = cache
        if not isinstance(d_eps_theta, np.ndarray) or d_eps_theta.shape != out_shape:
            got = getattr(d_eps_theta, "shape", type(d_eps_theta).__name__)
            raise ValueError(f"d_eps_theta: expected shape {out_shape}, got {got}")
        L, g = self.layers, {}
        dh, g["out.conv.w"], g["out.conv.b"] = L.conv2d_backward(d_eps_theta, c_out)
        dh, g["out.norm.gamma"], g["out.norm.beta"] = L.groupnorm_silu_backward(dh, c_gn)
        d_temb_act = None  # sum over res blocks of dL/dSiLU(temb)
        d_skips = []  # gradients reaching the skip tensors through the concats
        for step, step_cache in reversed(tape):
            kind = step[0]
            if kind == "conv":
                prefix = step[1]
                dh, g[prefix + ".w"], g[prefix + ".b"] = L.conv2d_backward(dh, step_cache)
            elif kind == "res":
                dh, d_ta, g_block = blocks.resblock_backward(dh, step_cache)
                g.update(g_block)
                d_temb_act = d_ta if d_temb_act is None else d_temb_act + d_ta
            elif kind == "attn":
                dh, g_block = blocks.attnblock_backward(dh, step_cache)
                g.update(g_block)
            elif kind == "skip":
                # h fed the next layer and the concat: gradients add
                dh = L.add(dh, d_skips.pop())
            elif kind == "concat":
                dh, d_skip = L.concat_backward(dh, step_cache)
                d_skips.append(d_skip)
            else:  # upsample
                dh = L.upsample2x_backward(dh, step_cache)
        # the time MLP, backwards
        da = L.silu_backward(d_temb_act, c_t3)
        da, g["temb.1.w"], g["temb.1.b"] = L.linear_backward(da, c_t2)
        da = L.silu_backward(da, c_t1)
        _, g["temb.0.w"], g["temb.0.b"] = L.linear_backward(da, c_t0)
        return {k: g[k] for k in self.param_shapes()}  # params' key order
