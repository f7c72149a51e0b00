"""The monitoring stage: label-free estimates, drift and alarms on production batches.

- :mod:`tai.monitoring.reference`: :func:`~tai.monitoring.reference.fit_reference`, once
  per model version at registration, and its file (``save`` / ``load``);
- :mod:`tai.monitoring.assess`: :func:`~tai.monitoring.assess.assess_batch`, per batch;
- :mod:`tai.monitoring.selftest`: false alarms and detections of an alarm rule;
- :mod:`tai.monitoring.checks`: the declared metrics, for the registry;
- the methods: :mod:`~tai.monitoring.atc` (ATC, AC, DoC), :mod:`~tai.monitoring.priors`
  (EM, BBSE), :mod:`~tai.monitoring.deferral` (Fisher's exact test),
  :mod:`~tai.monitoring.drift` (MMD, factor KS, noise level), and input checks in
  :mod:`~tai.monitoring.arrays`.
"""
