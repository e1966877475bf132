"""What the suite's mmseg backbones share: frozen stages that stay frozen, stage outputs."""


class FrozenStagesMixin:
    """For a pretraining backbone with ``forward_stages``: the modules ``_frozen_modules``
    names run in eval mode without gradients (BatchNorm keeps its running statistics, drop
    path is off), and stay so through ``train()``; ``forward`` returns the stages
    ``out_indices``. Put it first among the bases, so its ``train`` and ``forward`` win."""

    def _frozen_modules(self):
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            module.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x):
        stages = self.forward_stages(x)
        return tuple(stages[i] for i in self.out_indices)
