"""A labelled set for report de-identification: cardiac-report sentences with planted identifiers, and clean
clinical sentences full of numbers and units that must come out unchanged.

Written by hand from real-world formats (names from many languages, US/European/ISO dates and month names,
hospital number formats, phone numbers of several countries, addresses, e-mail and web addresses, ages),
independently of the detectors in `cmr_clip.privacy`: templates AND hand-written sentences, all
deterministic (`random.Random(seed)`).

    from deid_sentences import identifier_sentences, clean_sentences
    for text, planted in identifier_sentences(): ...   # planted: the identifier strings in `text`
"""

from __future__ import annotations

import random

FAMILY_NAMES = ["Wojciechowski", "O'Neil", "Nakamura", "Müller-Lüdenscheidt", "Okafor", "Haddad", "Van der Berg",
                "Fitzgerald", "Nguyen", "García-Márquez", "Kowalczyk", "Abernathy", "Oyelaran", "Smith", "Bianchi",
                "Papadopoulos", "Lindqvist", "Dubois", "MacLeod", "Ivanova", "Chatterjee", "Brown", "Yilmaz",
                "Fernández", "Johansson", "Schmidt", "Kim", "Rossi", "Novak", "Anand"]
GIVEN_NAMES = ["Anna", "Mary-Kate", "Taro", "Jürgen", "Chidi", "Leila", "Pieter", "Siobhan", "Minh", "Gabriel",
               "Zofia", "Eleanor", "Adebayo", "John", "Giulia", "Nikos", "Astrid", "Amélie", "Hamish", "Olga",
               "Priya", "Robert", "Emre", "Lucía", "Sven", "Karl", "Ji-woo", "Marco", "Tomáš", "Ravi"]
NON_LATIN_NAMES = ["山田 太郎", "Иванов Сергей", "김민준", "محمد الأحمد", "Παπαδόπουλος Νίκος"]
TITLES = ["Dr.", "Dr", "Doctor", "Prof.", "Mrs.", "Mr.", "Ms."]
IDS = ["RAD-2021-000123", "A1B2C3D4", "MRN00012345", "12345678", "000482913", "CMR/19/44821", "H-7734-2209",
       "ACC987654321", "X9Y8Z7W6", "2019-CMR-0441", "NHS 943 476 5919", "K7-55310-Q", "P00123987", "9876543210",
       "ZH-448-120-77", "AB123456C", "E-2020-11873", "MR4471920", "S-88213-A", "100-44-7812"]
DATES = ["12/03/1958", "03-12-1958", "1958-03-12", "19580312", "12.03.1958", "March 12, 1958", "12 March 1958",
         "Mar 12, 1958", "12-Mar-1958", "3/12/58", "Jan 1, 1970", "01/01/1970", "1970-01-01", "19700101",
         "1st January 1970", "July 4th, 2021", "2021/07/04", "04.07.2021", "Sept. 9, 2019", "9 Sep 2019",
         "October 2020", "11/30/2022", "2023-02-28", "28/02/23", "5 June 2018"]
PHONES = ["(216) 555-0142", "216-555-0142", "216.555.0142", "+1 216 555 0142", "+44 20 7946 0958",
          "020 7946 0958", "+49 30 12345678", "+81 3-1234-5678", "555-0142 ext. 221", "0161 496 0123",
          "+33 1 42 68 53 00", "(0)20 7946 0958"]
EMAILS = ["anna.wojciechowski@hospital.org", "mk.oneil@mail.example.com", "dr_nakamura@clinic.co.jp",
          "cardiology-office@uhc.nhs.uk", "jdoe1970@gmail.com"]
URLS = ["https://pacs.hospital.org/viewer?study=44821", "http://intranet.example.org/reports/RAD-2021-000123",
        "www.heartcentre.example.com/patients/4471", "https://portal.uhc.nhs.uk/record/88213"]
PATHS = ["/mnt/pacs/exports/WOJCIECHOWSKI^ANNA/CMR", r"C:\Users\radiology\DOE^JANE_19700101\study.zip",
         r"\\pacs01\export\ONEIL_MARY-KATE\IMA", "/data/cmr/Nakamura_Taro_19580312/series5"]
ADDRESSES = ["12 Elm Street", "4471 Lakeshore Boulevard", "221B Baker Street", "77 Rue de Rivoli",
             "Hauptstraße 5", "1600 Pennsylvania Avenue", "9 Harbour View Road", "350 Fifth Avenue, Suite 4100",
             "PO Box 4471", "Cleveland, OH 44106", "London SW1A 1AA", "Manchester M13 9PL"]
AGES = ["93-year-old", "97 year old", "aged 91", "age 102", "95 yo", "90 y/o", "99-year-old", "age: 94"]

# Templates: {x} is the planted identifier. Each template is a context reports really use.
NAME_TEMPLATES = [
    "Findings were discussed with {title} {name} at the time of scanning.",
    "Referring: {name}.",
    "Referring physician: {title} {name}",
    "Reported by {title} {name}, consultant cardiologist.",
    "Results communicated to {title} {name} by telephone.",
    "Electronically signed by: {name}, MD",
    "Patient: {name}. Indication: chest pain.",
    "cc: {title} {name}",
    "Compared with the outside study reviewed by {title} {name}, the LV is now smaller.",
    "Requested by {title} {name} for assessment of cardiomyopathy.",
    "Name: {name}",
    "Read by: {title} {name}",
]
DATE_TEMPLATES = [
    "Comparison is made with the prior study of {x}.",
    "DOB: {x}. LVEF 55%.",
    "Previous CMR on {x} showed LVEF 40%.",
    "Exam date {x}; scanned at 1.5 T.",
    "Since the echocardiogram of {x} the effusion has resolved.",
    "Date of birth {x}.",
    "Myocardial infarction in {x}, treated with PCI to the LAD.",
    "Follow-up CMR ({x}) shows interval improvement.",
]
ID_TEMPLATES = [
    "MRN: {x}.", "Accession number {x}.", "Patient ID {x}; study performed on the 3 T scanner.",
    "Ref {x}: no late gadolinium enhancement.", "Study {x} compared with the prior examination.",
    "Hospital number {x}.", "Order {x} - cardiac MRI with contrast.", "({x}) Normal biventricular size and function.",
    "Record {x} was reviewed.", "Case {x}: dilated cardiomyopathy protocol.",
]
PHONE_TEMPLATES = ["Please call {x} with any questions.", "Cardiology office: {x}.", "Fax report to {x}.",
                   "Contact the MRI unit on {x} to book follow-up.", "Tel {x}", "Urgent findings phoned through; callback {x}."]
EMAIL_TEMPLATES = ["Send the images to {x}.", "Queries: {x}", "Report copied to {x} for the MDT."]
URL_TEMPLATES = ["Images available at {x}.", "See {x} for the full cine loops.", "Protocol: {x}"]
PATH_TEMPLATES = ["Source images: {x}", "Exported from {x} for research.", "DICOM loaded from {x}."]
ADDRESS_TEMPLATES = ["Patient lives at {x}.", "Address: {x}", "Transferred from the clinic at {x}."]
AGE_TEMPLATES = ["{x} woman with exertional dyspnoea.", "Indication: {x} man, syncope.", "Patient {x}, frail, LVEF 45%.",
                 "{x} with amyloidosis suspected."]

HAND_WRITTEN = [  # (text, planted identifiers)
    ("WOJCIECHOWSKI, ANNA (MRN 4471920) was scanned on 03/12/2021.", ["WOJCIECHOWSKI", "ANNA", "4471920", "03/12/2021"]),
    ("Mrs O'Neil (DOB 12/03/1958) tolerated the study well.", ["O'Neil", "12/03/1958"]),
    ("Dr. 山田 太郎 reviewed the LGE images.", ["山田 太郎"]),
    ("Referring: Müller-Lüdenscheidt, Jürgen", ["Müller-Lüdenscheidt", "Jürgen"]),
    ("Accession RAD-2021-000123, MRN A1B2C3D4.", ["RAD-2021-000123", "A1B2C3D4"]),
    ("Discussed with Dr Chatterjee on 14 Feb 2022 at 15:30.", ["Chatterjee", "14 Feb 2022"]),
    ("The 96-year-old patient could not hold her breath; images are degraded.", ["96-year-old"]),
    ("Call (216) 555-0142 or page 4471.", ["(216) 555-0142"]),
    ("Seen at 4471 Lakeshore Boulevard, Cleveland, OH 44106.", ["4471 Lakeshore Boulevard", "OH 44106"]),
    ("Prof. Amélie Dubois, FRCR, verified this report.", ["Amélie", "Dubois"]),
    ("Images were pushed to \\\\pacs01\\export\\DUBOIS^AMELIE for review.", ["DUBOIS^AMELIE"]),
    ("Patient name: Иванов Сергей.", ["Иванов", "Сергей"]),
    ("Study compared with outside CMR dated 2019-11-04 (accession E-2020-11873).", ["2019-11-04", "E-2020-11873"]),
    ("Nonagenarian with severe aortic stenosis; LVEF 60%.", ["Nonagenarian"]),
    ("Ordered by Dr. Kim Ji-woo, contact kim.jiwoo@hospital.org.", ["Kim Ji-woo", "kim.jiwoo@hospital.org"]),
    ("ID: X9Y8Z7W6. Mild LV dilatation.", ["X9Y8Z7W6"]),
    ("Prior CMR from Jan 2020 showed no enhancement.", ["Jan 2020"]),
    ("Verified by: Papadopoulos Nikos", ["Papadopoulos", "Nikos"]),
    ("Pt aged 99, LVEF 30%.", ["99"]),
    ("Report for NOVAK^TOMAS^^DR dictated 5/6/2023.", ["NOVAK^TOMAS^^DR", "5/6/2023"]),
]


def _identifier_pool(rng: random.Random) -> list[tuple[str, list[str]]]:
    sentences = []
    for index, template in enumerate(NAME_TEMPLATES * 4):
        family, given = rng.choice(FAMILY_NAMES), rng.choice(GIVEN_NAMES)
        form = index % 5
        name = (f"{given} {family}", f"{family}, {given}", f"{given[0]}. {family}", family, f"{family.upper()}, {given.upper()}")[form]
        if index % 11 == 3:
            name = rng.choice(NON_LATIN_NAMES)
        title = rng.choice(TITLES)
        planted = [name] if "," not in name and "." not in name else [part.strip(" .") for part in name.split(",")]
        planted = [p.split(". ")[-1] for p in planted]
        sentences.append((template.format(title=title, name=name), planted))
    for templates, pool in ((DATE_TEMPLATES, DATES), (ID_TEMPLATES, IDS), (PHONE_TEMPLATES, PHONES),
                            (EMAIL_TEMPLATES, EMAILS), (URL_TEMPLATES, URLS), (PATH_TEMPLATES, PATHS),
                            (ADDRESS_TEMPLATES, ADDRESSES), (AGE_TEMPLATES, AGES)):
        for value in pool:
            for template in rng.sample(templates, min(len(templates), 3 if len(pool) > 10 else 5)):
                sentences.append((template.format(x=value), [value]))
    return sentences


def identifier_sentences(seed: int = 0) -> list[tuple[str, list[str]]]:
    """Sentences with planted identifiers: (text, the identifiers planted in it)."""
    rng = random.Random(seed)
    return _identifier_pool(rng) + HAND_WRITTEN


CLEAN_HAND_WRITTEN = [
    "LVEF 35%, moderately impaired.",
    "Basal inferolateral wall measures 17 mm in end-diastole.",
    "Native T1 1050 ms at 3 T (local normal range 950-1050 ms).",
    "T2* 28 ms, no myocardial iron overload.",
    "ECV 28%, within normal limits.",
    "NYHA II symptoms for 2 years ago onset, now NYHA III.",
    "ECG: Mobitz II second-degree AV block; ST elevation in V4.",
    "Subendocardial LGE in the LAD territory; no enhancement in the RCA or LCx territories.",
    "Transmural infarction of the basal to mid anteroseptal segments (AHA segments 2 and 8).",
    "No pericardial effusion. No LV thrombus.",
    "Grade 2 mitral regurgitation with a regurgitant fraction of 24%.",
    "RVEF 48%, RVEDV 180 mL (95 mL/m2).",
    "Aortic root 42 mm at the sinuses of Valsalva.",
    "LVEDV 210 ml, LVESV 150 ml, LV mass 160 g (82 g/m2).",
    "Heart rate 72 bpm; cine bSSFP with 25 phases per cycle, slice thickness 8 mm, gap 2 mm.",
    "TI scout: optimal inversion time 300 ms at 10 minutes after 0.15 mmol/kg gadobutrol.",
    "Mid-wall fibrosis in the septum, typical of DCM; no LGE at the RV insertion points.",
    "Patchy LGE in segments 3, 9 and 14, non-ischaemic pattern.",
    "S1 and S2 normal; no S3.",
    "Apical ballooning with sparing of the basal segments, consistent with Takotsubo.",
    "Maximal wall thickness 31 mm in the anterior septum with SAM and LVOT gradient 64 mmHg.",
    "Known HCM (MYH7 variant), ICD in situ since 2015 - artefact limits LGE assessment.",
    "COVID-19 myocarditis 6 months ago; now T2 normal (52 ms) and no oedema.",
    "Stress perfusion: inducible defect in 4 of 16 segments (LAD and RCA territories).",
    "Flow: Qp/Qs 1.8; peak velocity 3.2 m/s across the aortic valve.",
    "Mildly dilated LV (EDVi 112 mL/m2) with global hypokinesis, LVEF 38% (ref 57-77%).",
    "Mitral annular disjunction 6 mm; no ventricular ectopy during the scan.",
    "Amyloid: diffuse subendocardial LGE, ECV 55%, native T1 1180 ms (1.5 T).",
    "Apical aneurysm with thrombus measuring 14 x 9 mm.",
    "No evidence of ARVC (Task Force criteria not met: RVEDV 98 mL/m2 in a man).",
    "Cardiac sarcoid: patchy LGE in the basal septum and RV free wall, T2 62 ms.",
    "Compared with the prior study, LVEF improved from 30% to 42%.",
    "Small pericardial effusion (maximal depth 6 mm), no tamponade physiology.",
    "Left atrium 45 mm (AP), LA volume 48 mL/m2.",
    "Bicuspid aortic valve (Sievers type 1) with moderate AS, AVA 1.1 cm2.",
    "Septal flash with LBBB; CRT-D considered.",
    "Segmental analysis per the AHA 17-segment model: segments 1-6 basal, 7-12 mid, 13-16 apical, 17 apex.",
    "No late enhancement. Normal biventricular volumes and function.",
    "Findings in keeping with ischaemic cardiomyopathy; viability in 12 of 17 segments (<50% transmurality).",
    "Peak troponin 1200 ng/L 3 days before the scan.",
    "Atrial fibrillation at 110-130 bpm degraded cine quality; arrhythmia rejection used.",
    "HbA1c 7.2%, eGFR 58 mL/min/1.73 m2: gadolinium given at 0.1 mmol/kg.",
    "RV dilated (RVEDVi 140 mL/m2) with free-wall hypokinesis; TAPSE equivalent 14 mm.",
    "Fontan circulation; no thrombus in the conduit (22 mm diameter).",
    "Coronary origins normal; no anomalous course of the LCx.",
    "Pulmonary regurgitant fraction 38% after tetralogy of Fallot repair in 1998.",
    "NT-proBNP 3400 pg/mL; LVEF 25% with LV thrombus 12 mm.",
    "Mobitz I block during the scan; no pauses > 3 s.",
    "Grade III diastolic dysfunction suggested by the LA size.",
    "No myocardial oedema on T2-STIR; T1 mapping (MOLLI 5(3)3) 990 ms.",
    "Inferior wall: 50-75% transmural LGE in segments 4 and 10.",
    "EF 55-60%, no regional wall motion abnormality.",
    "Stable appearances compared with 2 years ago.",
    "Moderate tricuspid regurgitation, TR jet 2.8 m/s, estimated RVSP 40 mmHg.",
    "V1-V3 Q waves on the ECG correspond to the anteroseptal scar.",
    "Phase-contrast flow at the main pulmonary artery: forward volume 78 mL, net 70 mL.",
    "Cine SAX stack of 12 slices covered the LV from base to apex.",
    "Left ventricular non-compaction: NC/C ratio 2.6 in diastole.",
    "Pericardial thickness 5 mm with LGE, suggesting constrictive pericarditis.",
    "Mass 18 x 22 x 30 mm in the RA, T1 hyperintense, likely lipoma.",
]

CLEAN_TEMPLATES = [
    "LVEF {pct}% with {grade} global hypokinesis.",
    "RVEF {pct}%; RVEDV {vol} mL ({ivol} mL/m2).",
    "Septal thickness {mm} mm, posterior wall {mm2} mm.",
    "Native T1 {t1} ms and T2 {t2} ms at {field} T.",
    "ECV {ecv}% (normal < 30%).",
    "LGE in AHA segment {seg} and {seg2}, {pattern}.",
    "{grade} mitral regurgitation, regurgitant volume {small} mL.",
    "Aortic root {mm3} mm, ascending aorta {mm4} mm.",
    "Heart rate {hr} bpm; {phases} phases reconstructed.",
    "No LGE; LV mass {mass} g ({imass} g/m2).",
    "{territory} territory infarct, {tm}% transmurality.",
    "T2* {t2s} ms, {iron}.",
    "NYHA {nyha}; symptoms began {n} years ago.",
    "Perfusion defect in {n} segments of the {territory} territory.",
    "LV end-diastolic diameter {edd} mm, end-systolic diameter {esd} mm.",
    "Peak gradient {grad} mmHg across the LVOT at rest.",
    "Pericardial effusion {mm} mm, {grade}.",
    "Compared with {n} months ago, LVEF changed from {pct}% to {pct2}%.",
]


def clean_sentences(seed: int = 1) -> list[str]:
    """Clinical sentences with numbers and units and no identifier: none may change."""
    rng = random.Random(seed)
    grades = ["mild", "moderate", "severe", "Grade 1", "Grade II", "trace", "no"]
    values = lambda: dict(  # noqa: E731 - one fresh draw per sentence
        pct=rng.randint(10, 75), pct2=rng.randint(10, 75), grade=rng.choice(grades), vol=rng.randint(90, 320),
        ivol=rng.randint(50, 180), mm=rng.randint(5, 35), mm2=rng.randint(5, 20), mm3=rng.randint(25, 55),
        mm4=rng.randint(25, 55), t1=rng.randint(900, 1400), t2=rng.randint(40, 75), field=rng.choice(["1.5", "3", "0.55"]),
        ecv=rng.randint(20, 65), seg=rng.randint(1, 17), seg2=rng.randint(1, 17),
        pattern=rng.choice(["subendocardial", "mid-wall", "epicardial", "transmural", "patchy"]), small=rng.randint(5, 70),
        hr=rng.randint(40, 140), phases=rng.choice([20, 25, 30, 40]), mass=rng.randint(60, 300), imass=rng.randint(40, 160),
        territory=rng.choice(["LAD", "RCA", "LCx", "inferior", "anterior"]), tm=rng.choice(["<25", "25-50", "50-75", ">75"]),
        t2s=rng.randint(5, 45), iron=rng.choice(["no iron overload", "mild iron loading", "severe iron loading"]),
        nyha=rng.choice(["I", "II", "III", "IV", "II-III"]), n=rng.randint(2, 12), edd=rng.randint(40, 75),
        esd=rng.randint(20, 60), grad=rng.randint(5, 120),
    )
    generated = [rng.choice(CLEAN_TEMPLATES).format(**values()) for _ in range(260)]
    return CLEAN_HAND_WRITTEN + generated
