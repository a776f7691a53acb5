"""Synaptic device presets with their published sources: ``[devices] preset = "rram"``.

Each preset is a conductance range and a set of :class:`analog.devices.DeviceConfig` values. The
update parameters come from the device fits that IBM's aihwkit ships as presets (file
``src/aihwkit/simulator/presets/devices.py``), each of which names the measurement it was fitted
to; the PCM drift law is aihwkit's ``PCMLikeNoiseModel`` (``src/aihwkit/inference/noise/pcm.py``),
fitted to measured PCM arrays (Nandakumar et al., ICECS 2019; used by Joshi et al., Nat. Commun.
11:2473, 2020). aihwkit's weights are normalised (``w`` in ``[w_min, w_max]``, step ``dw_min``);
they map onto this simulator's conductances as follows:

* ``levels``: the range divided by the mean step, ``(w_max - w_min) / dw_min + 1``;
* ``d2d_sigma``: aihwkit's device-to-device spread of the range bound ``w_max_dtod`` (as a
  fraction of ``w_max``), here a lognormal factor on each device's conductance;
* ``pulse_noise_sigma``: aihwkit's cycle-to-cycle spread of one pulse's step ``dw_min_std``
  (a fraction of the step), the same meaning here;
* ``nonlinearity`` / ``asymmetry``: the soft-bound strength and the up/down ratio of the fit (how
  each is derived is stated per preset).

A value no cited source gives is marked **representative** with the reason. The conductance
ranges of RRAM and ECRAM are such values: the cited fits are normalised and give no siemens.

Precedence (lowest first): the preset, then the keys written in ``[devices]``, then the keys
written in a block's ``devices`` table (a block's own ``devices.preset`` replaces the preset
layer for that block). The preset's conductance range fills an analog block's ``g_min_S`` /
``g_max_S`` unless the block writes them (they stay block keys: they are part of the circuit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEVICE_PRESETS", "DevicePreset", "preset"]

AIHWKIT_PRESETS = "aihwkit src/aihwkit/simulator/presets/devices.py"
AIHWKIT_PCM_NOISE = "aihwkit src/aihwkit/inference/noise/pcm.py PCMLikeNoiseModel"


@dataclass(frozen=True)
class DevicePreset:
    """One synapse technology: its conductance range, device-model values and their sources."""

    name: str
    g_min_S: float
    """Lowest programmable conductance, siemens."""
    g_max_S: float
    """Highest programmable conductance, siemens."""
    devices: dict = field(default_factory=dict)
    """``DeviceConfig`` field -> value."""
    sources: dict = field(default_factory=dict)
    """Field (or ``g_min_S`` / ``g_max_S``) -> where the value comes from."""


RRAM = DevicePreset(
    name="rram",
    g_min_S=1e-6,
    g_max_S=1e-4,
    devices={
        "levels": 1001,
        "stochastic_rounding": True,
        "d2d_sigma": 0.24,
        "d2d_distribution": "lognormal",
        "pulse_noise_sigma": 3.75,
        "nonlinearity": 1.0,
        "asymmetry": 0.0,
        "drift_nu": 0.0,
        "drift_nu_sigma": 0.0,
        "write_pulse_V": 1.75,
        "write_pulse_s": 50e-9,
    },
    sources={
        "g_min_S": "representative: 1-100 uS is the span of filamentary HfOx analog RRAM used here "
        "as the simulator's default; the cited fit is normalised",
        "g_max_S": "representative (see g_min_S)",
        "levels": f"{AIHWKIT_PRESETS} ReRamSBPresetDevice (soft-bounds fit to HfO2 RRAM of Gong et al., "
        "Nat. Commun. 9:2102, 2018): dw_min 0.002 over [w_min, w_max] = [-0.75, 1.25] -> 1000 steps",
        "stochastic_rounding": "aihwkit updates with stochastic pulse trains (PresetUpdateParameters); "
        "rounding to a neighbouring level with the right mean is the same expectation",
        "d2d_sigma": f"{AIHWKIT_PRESETS} ReRamSBPresetDevice: w_max_dtod = 0.3 / 1.25 = 0.24",
        "d2d_distribution": "lognormal keeps every factor positive at sigma 0.24 (a modelling choice)",
        "pulse_noise_sigma": f"{AIHWKIT_PRESETS} ReRamSBPresetDevice: dw_min_std = 3.75",
        "nonlinearity": f"{AIHWKIT_PRESETS} ReRamSBPresetDevice is a SoftBoundsDevice: the step falls "
        "linearly to 0 at the bound, i.e. full soft bounds",
        "asymmetry": f"{AIHWKIT_PRESETS} ReRamSBPresetDevice: up_down = 0 (symmetry point assumed "
        "corrected by a reference device)",
        "drift_nu": "none given: the cited fit has no retention model; set drift_nu to study relaxation",
        "drift_nu_sigma": "none given (see drift_nu)",
        "write_pulse_V": "Gong et al., Nat. Commun. 9:2102 (2018), Fig. 4: set pulses of 1.6-1.7 V and reset "
        "pulses of -1.8 to -1.9 V on the HfO2 RRAM the fit describes; 1.75 V is their mean magnitude. A "
        "pulse then costs V^2 G t at the device's conductance (its I-V is taken as linear)",
        "write_pulse_s": "representative: 50 ns, within the 10 ns-1 us range of analog HfOx programming; the "
        "cited work gives amplitudes, not the duration used here",
    },
)

PCM = DevicePreset(
    name="pcm",
    g_min_S=1e-7,
    g_max_S=25e-6,
    devices={
        "levels": 201,
        "stochastic_rounding": True,
        "d2d_sigma": 0.1,
        "d2d_distribution": "lognormal",
        "pulse_noise_sigma": 0.6,
        "nonlinearity": 0.96,
        "asymmetry": 0.0,
        "drift_nu": 0.049,
        "drift_nu_sigma": 0.01,
        "drift_t0_s": 20.0,
    },
    sources={
        "g_max_S": f"{AIHWKIT_PCM_NOISE}: g_max reference 25 uS of the fitted PCM devices (Nandakumar "
        "et al., ICECS 2019; Joshi et al., Nat. Commun. 11:2473, 2020)",
        "g_min_S": "representative: the RESET state is near 0 S in the cited model (its noise clips at 0); "
        "the circuit needs g_min > 0, 0.1 uS = 0.4% of g_max",
        "levels": f"{AIHWKIT_PRESETS} PCMPresetDevice (GST PCM of Nandakumar et al., Front. Neurosci. "
        "14:406, 2020): dw_min 0.01 over [w_min, w_max] = [0, 2] -> 200 steps",
        "stochastic_rounding": "aihwkit updates with stochastic pulse trains (PresetUpdateParameters)",
        "d2d_sigma": f"{AIHWKIT_PRESETS} PCMPresetDevice: w_max_dtod = 0.1",
        "d2d_distribution": "lognormal keeps every factor positive (a modelling choice)",
        "pulse_noise_sigma": f"{AIHWKIT_PRESETS} PCMPresetDevice: dw_min_std = 0.6 (its additive and "
        "state-dependent terms dw_min_std_add/_slope are not modelled)",
        "nonlinearity": f"{AIHWKIT_PRESETS} PCMPresetDevice: ExpStep SET step 1 - A_up exp(-gamma_up w) "
        "with A_up -27.235, gamma_up 2.5 falls from 28.2 at w=0 to 1.18 at w=2 (ratio 0.04); the "
        "linear soft bound matching both ends is 1 - 0.04 = 0.96",
        "asymmetry": f"{AIHWKIT_PRESETS} PCMPresetDevice: up_down = 0. PCM is unidirectional (gradual SET, "
        "abrupt RESET); aihwkit pairs two devices with refresh, not modelled here",
        "drift_nu": f"{AIHWKIT_PCM_NOISE}: mean nu(G) = clamp(-0.0155 ln(G/g_max) + 0.0244, 0.049, 0.1) "
        "is 0.049 for every G >= 0.2 g_max (Joshi et al. 2020 report nu ~ 0.05); its state dependence "
        "is not modelled",
        "drift_nu_sigma": f"representative within {AIHWKIT_PCM_NOISE}: sigma_nu(G) = clamp(-0.0125 "
        "ln(G/g_max) - 0.0059, 0.008, 0.045) spans 0.008-0.014 for G in [0.2, 1] g_max",
        "drift_t0_s": f"{AIHWKIT_PCM_NOISE}: t_0 = 20 s, the first read after programming",
        "write_pulse_J": "none given: a PCM SET pulse's energy is set by the threshold-switched cell, not by "
        "its read conductance, and the cited works give none; set write_pulse_J (and write_pulse_s) to "
        "count programming",
    },
)

ECRAM = DevicePreset(
    name="ecram",
    g_min_S=1e-6,
    g_max_S=1e-4,
    devices={
        "levels": 1001,
        "stochastic_rounding": True,
        "d2d_sigma": 0.05,
        "d2d_distribution": "lognormal",
        "pulse_noise_sigma": 0.3,
        "nonlinearity": 0.45,
        "asymmetry": 0.0,
        "drift_nu": 0.0,
        "drift_nu_sigma": 0.0,
        "write_pulse_s": 5e-9,
        "write_pulse_J": 1e-15,
    },
    sources={
        "g_min_S": "representative: the cited fit is normalised; Tang et al. report a 'large dynamic "
        "range' without a figure usable here, so the simulator's default 1-100 uS is kept",
        "g_max_S": "representative (see g_min_S)",
        "levels": f"{AIHWKIT_PRESETS} EcRamPresetDevice (Li-WO3 ECRAM of Tang et al., IEDM 2018, "
        "doi 10.1109/IEDM.2018.8614551): dw_min 0.002 over [-0.8276, 1.1724] -> 1000 steps; Tang "
        "et al.'s abstract: 'up to 1000 discrete states'",
        "stochastic_rounding": "aihwkit updates with stochastic pulse trains (PresetUpdateParameters)",
        "d2d_sigma": f"{AIHWKIT_PRESETS} EcRamPresetDevice: w_max_dtod = 0.05",
        "d2d_distribution": "lognormal keeps every factor positive (a modelling choice)",
        "pulse_noise_sigma": f"{AIHWKIT_PRESETS} EcRamPresetDevice: dw_min_std = 0.3",
        "nonlinearity": f"{AIHWKIT_PRESETS} EcRamPresetDevice: LinearStep gamma_up 0.1153, gamma_down "
        "0.5085 shrink the up step to 0.82x and the down step to 0.29x across the range, i.e. soft "
        "bounds of 0.18 (up) and 0.71 (down); one strength here: their mean, 0.45",
        "asymmetry": f"{AIHWKIT_PRESETS} EcRamPresetDevice: up_down = 0 (range shifted to the symmetry point)",
        "drift_nu": "none given: Tang et al. report 'good retention' without a drift law",
        "drift_nu_sigma": "none given (see drift_nu)",
        "write_pulse_s": "Tang et al., IEDM 2018: 'high-speed programming with pulse width down to 5 ns'",
        "write_pulse_J": "Tang et al., IEDM 2018: 'projecting an ultralow switching energy ~1 fJ for "
        "100x100 nm^2 devices' (a projection for scaled cells, not a measurement of these)",
    },
)

DEVICE_PRESETS: dict[str, DevicePreset] = {p.name: p for p in (RRAM, PCM, ECRAM)}
"""Every preset by name."""


def preset(name: str) -> DevicePreset:
    """The preset called ``name``; an unknown name lists the known ones."""
    try:
        return DEVICE_PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"preset: unknown device preset {name!r}; known: {', '.join(sorted(DEVICE_PRESETS))}"
        ) from None
