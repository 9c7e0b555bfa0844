"""One study per paper's protocol (Santurkar et al., Balduzzi et al., Salimans & Kingma,
saturation), each a ``experiments.study.Study``."""
