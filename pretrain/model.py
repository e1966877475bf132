"""The VICRegL model: backbone, global expander, local projector, optional online probe."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone, norm_kind
from .distributed import all_gather_with_grad
from .grouping import same_shape
from .heads import mlp
from .losses import LOSS_KEYS, global_vicreg_terms, local_vicreg_terms, weighted_total
from .perview import per_view_mlp

__all__ = ["LOSS_KEYS", "VICRegL"]


class VICRegL(nn.Module):
    """Submodule names equal the official ones (``backbone``, ``projector``, ``maps_projector``,
    ``classifier``) so official checkpoints load strictly. As in the official code, the
    expander exists only when ``alpha > 0`` and the local projector only when ``alpha < 1``.

    ``fuse_views``: forward all views of one size as one batch. Exact for ConvNeXt (LayerNorm
    only) up to the drop-path noise draw order; refused for BatchNorm models, whose statistics
    are per view in the official code.

    ``fuse_heads``: run each head once over all views of one size, BatchNorm statistics and
    running-statistic updates still per view (``pretrain.perview``): same outputs, one large
    matrix product instead of one per view. Implied by ``fuse_views``.
    """

    def __init__(self, arch: str, mlp_spec: str = "8192-8192-8192",
                 maps_mlp_spec: str = "512-512-512", alpha: float = 0.75,
                 num_matches: Sequence[int] = (20, 4), l2_all_matches: bool = False,
                 inv_coeff: float = 25.0, var_coeff: float = 25.0, cov_coeff: float = 1.0,
                 num_classes: int | None = None, drop_path_rate: float = 0.1,
                 layer_scale_init_value: float = 0.0, fuse_views: bool = False,
                 fuse_heads: bool = False):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.arch = arch
        self.alpha = alpha
        self.num_matches = tuple(int(k) for k in num_matches)
        self.l2_all_matches = bool(l2_all_matches)
        self.coeffs = dict(inv_coeff=inv_coeff, var_coeff=var_coeff, cov_coeff=cov_coeff)
        self.backbone = build_backbone(arch, drop_path_rate, layer_scale_init_value)
        norm = norm_kind(arch)
        if fuse_views and norm == "batch_norm":
            raise ValueError("fuse_views changes BatchNorm statistics; use it with ConvNeXt only")
        self.fuse_views = fuse_views
        self.fuse_heads = fuse_heads or fuse_views
        width = self.backbone.num_features
        if alpha < 1.0:
            self.maps_projector = mlp(maps_mlp_spec, width, norm)
        if alpha > 0.0:
            self.projector = mlp(mlp_spec, width, norm)
        self.classifier = nn.Linear(width, num_classes) if num_classes else None

    @staticmethod
    def _groups(views: Sequence[torch.Tensor], fuse: bool) -> list[list[int]]:
        """Indices of the views processed together: one at a time, or all views of one size."""
        return same_shape(views) if fuse else [[i] for i in range(len(views))]

    def forward_views(self, views: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """Backbone and heads on each view; BatchNorm statistics are per view (official)."""
        features: list = [None] * len(views)
        for index in self._groups(views, self.fuse_views):
            maps, pooled = self.backbone(torch.cat([views[i] for i in index])
                                         if len(index) > 1 else views[index[0]])
            for i, m, p in zip(index, maps.chunk(len(index)), pooled.chunk(len(index))):
                features[i] = (m, p)
        out = {"representation": [p for _, p in features], "embedding": [None] * len(views),
               "maps_embedding": [None] * len(views)}
        for index in self._groups(views, self.fuse_heads):
            if self.alpha > 0.0:
                embeddings = per_view_mlp(self.projector, [features[i][1] for i in index])
                for i, e in zip(index, embeddings):
                    out["embedding"][i] = e
            if self.alpha < 1.0:
                b, p, c = features[index[0]][0].shape
                maps = per_view_mlp(self.maps_projector,
                                    [features[i][0].reshape(b * p, c) for i in index])
                for i, m in zip(index, maps):
                    out["maps_embedding"][i] = m.view(b, p, -1)
        return {k: v if v[0] is not None else [] for k, v in out.items()}

    def criterion(self, outputs: dict, locations: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms from ``forward_views`` outputs, computed in float32 (float64 stays)."""
        def upcast(ts):
            return [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in ts]

        terms: dict[str, torch.Tensor] = {}
        device_type = outputs["representation"][0].device.type
        # Deviation: the official code runs the criterion under fp16 autocast; we keep it in
        # float32 (same function, fewer overflows in the covariance).
        with torch.autocast(device_type, enabled=False):
            if self.alpha > 0.0:
                terms.update(global_vicreg_terms(upcast(outputs["embedding"]), **self.coeffs,
                                                 gather=all_gather_with_grad))
            if self.alpha < 1.0:
                terms.update(local_vicreg_terms(
                    upcast(outputs["maps_embedding"]), locations, self.num_matches,
                    self.l2_all_matches, **self.coeffs, gather=all_gather_with_grad))
        return terms

    def loss_terms(self, views: Sequence[torch.Tensor],
                   locations: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The six weighted loss terms (``LOSS_KEYS``); the global ones are absent when
        alpha = 0 and the local ones when alpha = 1, as the official model has no head for them.

        ``views``: list of (B, 3, H, W), large crops first; ``locations``: list of (B, N, N, 2)
        grids in original-image pixels, (row, col)."""
        return self.criterion(self.forward_views(views), locations)

    def forward(self, views: Sequence[torch.Tensor], locations: Sequence[torch.Tensor],
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss = alpha * global + (1 - alpha) * local + probe cross-entropy; and logs."""
        outputs = self.forward_views(views)
        terms = self.criterion(outputs, locations)
        loss = (outputs["representation"][0].new_zeros((), dtype=torch.float32)
                + weighted_total(terms, self.alpha))
        logs = {k: v.detach() for k, v in terms.items()}
        if self.classifier is not None and labels is not None:
            logits = self.classifier(outputs["representation"][0].detach())
            probe = F.cross_entropy(logits.float(), labels)
            loss = loss + probe
            logs["probe_ce"] = probe.detach()
            logs["probe_top1"] = (logits.argmax(1) == labels).float().mean() * 100
        with torch.no_grad():
            r = F.normalize(outputs["representation"][0].float(), dim=1)
            logs["repr_std"] = r.std(dim=0).mean()  # collapse monitor (official "stdr")
        logs["loss"] = loss.detach()
        return loss, logs
