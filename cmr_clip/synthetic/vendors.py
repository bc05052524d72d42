"""How Siemens, GE and Philips scanners name, group, number, scale and file the series of a cardiac exam.

Each vendor is a `VendorStyle`: header vocabulary per kind of series, the series-number scheme, how
cine short-axis slices are grouped (one series per stack, or one per slice as GE exports them), the
pixel scaling, and the file layouts its exports come in (with or without `.dcm`, nested folders).
The names are the ones these scanners' cardiac protocols use (Siemens `tirm`, `t2_tse_dark-blood`,
`tfl_perf`, `flow_..._Venc200`; GE `BB T2 STIR`, `FSE-XL`, `FastCard PC`; Philips `BB_T2W_SPAIR`,
`sr_tfe`, `Qflow`, with Philips' ImageType flags M_SE, M_IR, M_FFE, M_PCA).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VENDORS = ("siemens", "ge", "philips")


@dataclass(frozen=True)
class SeriesHeader:
    """Vendor vocabulary for one kind of series (`{view}` in descriptions is the vendor's view name)."""

    description: str
    protocol: str
    sequence_name: str
    scanning_sequence: tuple
    sequence_variant: tuple
    image_type: tuple


@dataclass(frozen=True)
class VendorStyle:
    name: str
    manufacturer: str
    models: dict  # field strength -> model names
    headers: dict  # series kind -> SeriesHeader
    view_names: dict  # view -> vendor's name for it
    cine_sax_per_slice: bool
    series_base: int  # first series number
    series_step: int
    scale: tuple  # stored value of blood on cine, range
    rescale_slope: tuple  # range; (1, 1) for vendors that store plain values
    bits_stored: int
    layouts: tuple  # file layouts this vendor's exports come in (see `file_path`)

    def header(self, kind: str) -> SeriesHeader:
        return self.headers[kind]


def _h(description, protocol, sequence_name, scanning, variant, image_type) -> SeriesHeader:
    scanning = (scanning,) if isinstance(scanning, str) else tuple(scanning)  # "GR" is one value, not G\R
    return SeriesHeader(description, protocol, sequence_name, scanning, tuple(variant), tuple(image_type))


SIEMENS = VendorStyle(
    name="siemens",
    manufacturer="SIEMENS",
    models={1.5: ("Avanto", "Aera", "Sola"), 3.0: ("Skyra", "Prisma", "Vida")},
    headers={
        "localizer": _h("localizer", "localizer", "*tfi2d1_12", "GR", ("SK", "SS"),
                        ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
        "cine": _h("cine_tf2d_{view}", "cine_tf2d_{view}", "*tfi2d1_12", "GR", ("SK", "SS"),
                   ("ORIGINAL", "PRIMARY", "M", "RETRO", "DIS2D")),
        "t1_map": _h("MOLLI_5(3)3_T1 MAP", "MOLLI_5(3)3", "*tfi2d1_192", ("GR", "IR"), ("SK", "SS", "MP"),
                     ("DERIVED", "PRIMARY", "T1 MAP", "MOCO", "NORM")),
        "ti_scout": _h("TI_Scout", "TI_Scout", "*tfi2d1_10", ("GR", "IR"), ("SK", "SS", "MP"),
                       ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
        "lge": _h("de_tfl2d_psir_{view}_MAG", "de_tfl2d_psir_{view}", "*tfl2d1", ("GR", "IR"), ("SK", "SP", "MP"),
                  ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
        "psir": _h("de_tfl2d_psir_{view}_PSIR", "de_tfl2d_psir_{view}", "*tfl2d1", ("GR", "IR"), ("SK", "SP", "MP"),
                   ("DERIVED", "PRIMARY", "PSIR", "NORM", "DIS2D")),
        "t2_stir": _h("t2_tirm_{view}_bb", "t2_tirm_{view}_bb", "*tir2d1_15", ("SE", "IR"), ("SK", "SP", "MP", "OSP"),
                      ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
        "t2_tse": _h("t2_tse_dark-blood_{view}", "tse_bb_{view}", "*tse2d1_15", "SE", ("SK", "SP", "OSP"),
                     ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D")),
        "t2star": _h("T2star_ME_{view}", "T2star_ME", "*fl2d8", "GR", ("SP",), ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
        "tagging": _h("tf2d_grid_tagging_{view}", "tf2d_grid_tagging", "*fl2d1r", "GR", ("SK", "SP"),
                      ("ORIGINAL", "PRIMARY", "M", "RETRO", "DIS2D")),
        "flow": _h("flow_AAo_Venc200", "flow_AAo_Venc200", "*fl2d1_v200in", "GR", ("SP",),
                   ("ORIGINAL", "PRIMARY", "M", "RETRO", "DIS2D")),
        "flow_phase": _h("flow_AAo_Venc200_P", "flow_AAo_Venc200", "*fl2d1_v200in", "GR", ("SP",),
                         ("ORIGINAL", "PRIMARY", "P", "RETRO", "DIS2D")),
        "perfusion": _h("tfl_perf_{view}", "tfl_perf_{view}", "*tfl2d1_16", "GR", ("SK", "SP", "MP"),
                        ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")),
    },
    view_names={"sax": "sax", "2ch": "2ch", "3ch": "3ch", "4ch": "4ch"},
    cine_sax_per_slice=False,
    series_base=1,
    series_step=1,
    scale=(250.0, 450.0),
    rescale_slope=(1.0, 1.0),
    bits_stored=12,
    layouts=("series_folders", "nested_no_ext"),
)

GE = VendorStyle(
    name="ge",
    manufacturer="GE MEDICAL SYSTEMS",
    models={1.5: ("SIGNA Artist", "Optima MR450w"), 3.0: ("Discovery MR750", "SIGNA Premier")},
    headers={
        "localizer": _h("3-Plane Loc", "3-PLANE LOC", "fgre", "GR", ("SS",), ("ORIGINAL", "PRIMARY", "LOCALIZER")),
        "cine": _h("FIESTA CINE {view}", "FIESTA CINE", "fiesta2d", "GR", ("SS",), ("ORIGINAL", "PRIMARY", "OTHER")),
        "t1_map": _h("MOLLI T1 MAP", "T1 MAPPING", "molli", ("GR", "IR"), ("SS", "MP"),
                     ("DERIVED", "PRIMARY", "T1 MAP")),
        "ti_scout": _h("CINE IR TI SCOUT", "TI SCOUT", "fgre2d", ("GR", "IR"), ("SS", "MP"),
                       ("ORIGINAL", "PRIMARY", "OTHER")),
        "lge": _h("MDE {view}", "MDE", "fgre2d", ("GR", "IR"), ("SS", "SP", "MP"), ("ORIGINAL", "PRIMARY", "OTHER")),
        "psir": _h("PSIR MDE {view}", "MDE PSIR", "fgre2d", ("GR", "IR"), ("SS", "SP", "MP"),
                   ("DERIVED", "PRIMARY", "OTHER", "PSIR")),
        "t2_stir": _h("BB T2 STIR {view}", "DIR FSE-XL STIR", "fse-xl", ("SE", "IR"), ("SK", "OSP"),
                      ("ORIGINAL", "PRIMARY", "OTHER")),
        "t2_tse": _h("DIR T2 FSE-XL {view}", "DIR FSE-XL", "fse-xl", "SE", ("SK", "OSP"), ("ORIGINAL", "PRIMARY", "OTHER")),
        "t2star": _h("GRE_ME T2* {view}", "GRE_ME", "mfgre", "GR", ("SS", "SP"), ("ORIGINAL", "PRIMARY", "OTHER")),
        "tagging": _h("TAGGING FGRE {view}", "TAGGING", "fgre2d", "GR", ("SS", "SP"), ("ORIGINAL", "PRIMARY", "OTHER")),
        "flow": _h("PC_ao FastCard", "2D FASTCARD PC", "fastcard_pc", "GR", ("SS", "SP"), ("ORIGINAL", "PRIMARY", "OTHER")),
        "flow_phase": _h("PC_ao FastCard", "2D FASTCARD PC", "fastcard_pc", "GR", ("SS", "SP"),
                         ("ORIGINAL", "PRIMARY", "PHASE")),
        "perfusion": _h("Perfusion {view}", "FGRE-ET PERFUSION", "fgre2d", "GR", ("SS", "SP", "MP"),
                        ("ORIGINAL", "PRIMARY", "OTHER")),
    },
    view_names={"sax": "SA", "2ch": "2CH", "3ch": "3CH", "4ch": "4CH"},
    cine_sax_per_slice=True,
    series_base=1,
    series_step=1,
    scale=(900.0, 1800.0),
    rescale_slope=(1.0, 1.0),
    bits_stored=16,
    layouts=("se_im", "se_im_dcm"),
)

PHILIPS = VendorStyle(
    name="philips",
    manufacturer="Philips Medical Systems",
    models={1.5: ("Ingenia", "Achieva"), 3.0: ("Ingenia", "Achieva dStream")},
    headers={
        "localizer": _h("Survey", "SURVEY", "", "GR", ("SS",), ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
        "cine": _h("sBTFE_{view}", "WIP sBTFE_{view} SENSE", "", "GR", ("SS",),
                   ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
        "t1_map": _h("MOLLI_T1MAP", "MOLLI", "", ("GR", "IR"), ("SS", "MP"), ("DERIVED", "PRIMARY", "T1", "T1_MAP")),
        "ti_scout": _h("LL_TI_scout", "LL_TI_scout", "", ("GR", "IR"), ("SS", "MP"),
                       ("ORIGINAL", "PRIMARY", "M_IR", "M", "IR")),
        "lge": _h("IR_TFE_LGE_{view}", "IR_TFE_LGE_{view}", "", ("GR", "IR"), ("SS", "MP"),
                  ("ORIGINAL", "PRIMARY", "M_IR", "M", "IR")),
        "psir": _h("PSIR_TFE_LGE_{view}", "IR_TFE_LGE_{view}", "", ("GR", "IR"), ("SS", "MP"),
                   ("ORIGINAL", "PRIMARY", "R_IR", "R", "IR")),
        "t2_stir": _h("BB_T2W_STIR_{view}", "BB_T2W_STIR", "", ("SE", "IR"), ("SK", "MP"),
                      ("ORIGINAL", "PRIMARY", "M_IR", "M", "IR")),
        "t2_tse": _h("BB_T2W_SPAIR_{view}", "T2W_TSE", "", "SE", ("SK",), ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE")),
        "t2star": _h("T2star_ME_{view}", "T2star_FFE_ME", "", "GR", ("SS",), ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
        "tagging": _h("CSPAMM_TAG_{view}", "CSPAMM_TAG", "", "GR", ("SS",), ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
        "flow": _h("Qflow_AAo_venc200", "Qflow_AAo", "", "GR", ("SS",), ("ORIGINAL", "PRIMARY", "M_PCA", "M", "PCA")),
        "flow_phase": _h("Qflow_AAo_venc200", "Qflow_AAo", "", "GR", ("SS",), ("ORIGINAL", "PRIMARY", "P_PCA", "P", "PCA")),
        "perfusion": _h("Perfusion_SR_TFE_{view}", "sr_tfe_perf", "", "GR", ("SS", "MP"),
                        ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")),
    },
    view_names={"sax": "SA", "2ch": "2CH", "3ch": "3CH", "4ch": "4CH"},
    cine_sax_per_slice=False,
    series_base=101,
    series_step=100,
    scale=(700.0, 1400.0),
    rescale_slope=(1.2, 3.2),
    bits_stored=12,
    layouts=("philips_flat", "philips_nested"),
)

STYLES = {style.name: style for style in (SIEMENS, GE, PHILIPS)}


def get_style(vendor: str) -> VendorStyle:
    if vendor not in STYLES:
        raise ValueError(f"unknown vendor {vendor!r}; expected one of {VENDORS}")
    return STYLES[vendor]


def check_vendors(vendors) -> tuple:
    """Validate a vendor list (None = all three)."""
    if vendors is None:
        return VENDORS
    if isinstance(vendors, str):
        vendors = (vendors,)
    vendors = tuple(vendors)
    if not vendors:
        raise ValueError("vendors must name at least one of " + ", ".join(VENDORS))
    for vendor in vendors:
        get_style(vendor)
    return vendors


def file_path(layout: str, series_number: int, description: str, instance: int, file_index: int,
              rng_token: str) -> str:
    """Where a file goes inside the study folder, for one of the vendors' export layouts."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in description) or "series"
    if layout == "series_folders":
        return f"{series_number:04d}_{safe}/IM-{series_number:04d}-{instance:04d}.dcm"
    if layout == "nested_no_ext":
        return f"DICOM/{rng_token}/S{series_number:03d}/I{instance:05d}"
    if layout == "se_im":
        return f"SE{series_number}/IM{instance:04d}"
    if layout == "se_im_dcm":
        return f"EXAM/SE{series_number}/IM{instance:04d}.dcm"
    if layout == "philips_flat":
        return f"DICOM/IM_{file_index:04d}"
    if layout == "philips_nested":
        return f"DICOM/{rng_token}/{series_number // 100:02d}/IM_{file_index:04d}"
    raise ValueError(f"unknown file layout {layout!r}")


def draw_scaling(style: VendorStyle, rng: np.random.Generator) -> tuple[float, float]:
    """(stored value of unit signal, RescaleSlope) for one study."""
    return float(rng.uniform(*style.scale)), round(float(rng.uniform(*style.rescale_slope)), 5)
