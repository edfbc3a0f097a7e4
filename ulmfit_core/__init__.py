"""The contract both environments share: the ground floor every other package builds on.

Standard library and numpy only (plus click for the CLI helpers), so that the fastai side, the
converter and the Keras library import it alike and it pulls in no framework:

* :mod:`ulmfit_core.ids`: fastai's special token ids;
* :mod:`ulmfit_core.lm_config`: the one model schema (``EXP.json`` / ``config.json``), its
  defaults and the architecture names;
* :mod:`ulmfit_core.classifier_config`: the ``"classifier"`` object of a stage-08 sidecar;
* :mod:`ulmfit_core.labelled_data`: TSV examples, label maps and the validation split (stages 08,
  10 and 11 read their data alike);
* :mod:`ulmfit_core.export_layout`: the names inside a stage-05 export directory;
* :mod:`ulmfit_core.artifacts`: atomic files and directories, JSON, sha256, library versions;
* :mod:`ulmfit_core.errors`: :class:`InputError`, the user-facing error;
* :mod:`ulmfit_core.cli` and :mod:`ulmfit_core.quiet_tf`: what every stage CLI shares.
"""
