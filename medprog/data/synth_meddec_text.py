"""Phrase bank of the MedDec generator (``synth_meddec``): slot fillers, decision templates,
non-decision filler sentences, the category weights per section, and the demographics of stats.csv.

Kept apart from the generator so that each file has one job; the tables are data, read in order,
so the same seed still writes the same bytes.
"""

from __future__ import annotations

# ---------------------------------------------------------------- slot fillers

DRUGS: list[tuple[str, list[str]]] = [
    ("lisinopril", ["5 mg", "10 mg", "20 mg"]),
    ("metoprolol tartrate", ["12.5 mg", "25 mg", "50 mg"]),
    ("metoprolol succinate", ["25 mg", "50 mg", "100 mg"]),
    ("furosemide", ["20 mg", "40 mg", "80 mg"]),
    ("Lasix", ["20 mg", "40 mg"]),
    ("warfarin", ["2 mg", "5 mg", "7.5 mg"]),
    ("apixaban", ["2.5 mg", "5 mg"]),
    ("aspirin", ["81 mg", "325 mg"]),
    ("atorvastatin", ["40 mg", "80 mg"]),
    ("amlodipine", ["5 mg", "10 mg"]),
    ("insulin glargine", ["10 units", "18 units", "24 units"]),
    ("metformin", ["500 mg", "1000 mg"]),
    ("prednisone", ["10 mg", "40 mg", "60 mg"]),
    ("levofloxacin", ["500 mg", "750 mg"]),
    ("ceftriaxone", ["1 g", "2 g"]),
    ("vancomycin", ["1 g", "1250 mg"]),
    ("piperacillin-tazobactam", ["4.5 g"]),
    ("azithromycin", ["250 mg", "500 mg"]),
    ("pantoprazole", ["40 mg"]),
    ("lactulose", ["30 mL"]),
    ("rifaximin", ["550 mg"]),
    ("spironolactone", ["25 mg", "50 mg"]),
    ("diltiazem", ["30 mg", "120 mg"]),
    ("amiodarone", ["200 mg", "400 mg"]),
    ("clopidogrel", ["75 mg"]),
    ("levothyroxine", ["50 mcg", "75 mcg"]),
    ("gabapentin", ["100 mg", "300 mg"]),
    ("oxycodone", ["5 mg"]),
    ("acetaminophen", ["650 mg", "1 g"]),
    ("potassium chloride", ["20 mEq", "40 mEq"]),
    ("heparin", ["5000 units"]),
    ("tamsulosin", ["0.4 mg"]),
]
ANTIBIOTICS = ["levofloxacin", "ceftriaxone", "vancomycin", "azithromycin", "cefpodoxime",
               "piperacillin-tazobactam", "ciprofloxacin", "Bactrim", "metronidazole", "cephalexin"]
FREQS = ["daily", "twice daily", "BID", "TID", "q8h", "at bedtime", "every other day", "once daily"]
PROBLEMS = [
    "pneumonia", "community acquired pneumonia", "urinary tract infection", "CHF exacerbation",
    "acute on chronic systolic heart failure", "COPD exacerbation", "atrial fibrillation with RVR",
    "acute kidney injury", "upper GI bleed", "lower GI bleed", "hepatic encephalopathy", "cellulitis",
    "urosepsis", "diabetic ketoacidosis", "hyperkalemia", "hyponatremia", "pulmonary embolism",
    "deep vein thrombosis", "NSTEMI", "hypertensive urgency", "syncope", "delirium", "C. diff colitis",
    "gallstone pancreatitis", "acute cholecystitis", "anemia", "small bowel obstruction",
    "alcohol withdrawal", "aspiration pneumonia", "pyelonephritis",
]
HISTORY = ["CAD", "hypertension", "type 2 diabetes", "COPD", "CKD stage III", "cirrhosis", "atrial fibrillation",
           "CHF", "hyperlipidemia", "hypothyroidism", "prior stroke", "breast cancer", "BPH", "asthma"]
CAUSES = ["volume overload", "dietary indiscretion", "medication nonadherence", "dehydration", "poor oral intake",
          "an underlying infection", "NSAID use", "alcohol use", "a urinary source", "a viral illness"]
PROCEDURES = [
    "cardiac catheterization with a drug eluting stent to the LAD", "EGD with clipping of a duodenal ulcer",
    "colonoscopy", "thoracentesis", "paracentesis", "ERCP with sphincterotomy", "laparoscopic cholecystectomy",
    "TIPS placement", "bronchoscopy", "IR guided drainage of the abscess", "PEG tube placement",
    "pacemaker placement", "DC cardioversion", "tunneled dialysis line placement", "incision and drainage",
]
IMAGING = ["chest x-ray", "CXR", "CT of the chest", "CT abdomen and pelvis", "CT head", "RUQ ultrasound",
           "renal ultrasound", "lower extremity Doppler study", "TTE", "MRI of the brain", "CTA chest", "KUB"]
LABS = ["lactate", "troponin", "BNP", "hemoglobin", "hematocrit", "creatinine", "potassium", "sodium", "INR",
        "lipase", "TSH", "hemoglobin A1c", "white count", "ammonia", "LFTs", "CK"]
LAB_VALUES = ["1.2", "1.8", "2.4", "3.1", "4.6", "5.9", "7.2", "9.8", "11.4", "128", "131", "146"]
NEG_FINDINGS = ["no acute intracranial process", "no evidence of pneumonia", "no pericardial effusion",
                "no DVT", "no acute cardiopulmonary process", "a normal ejection fraction", "no hydronephrosis",
                "stable appearance of the nodule", "no free air"]
POS_FINDINGS = ["a right lower lobe consolidation", "a moderate left pleural effusion", "pulmonary edema",
                "a segmental pulmonary embolus", "bilateral pleural effusions", "gallbladder wall thickening",
                "dilated loops of small bowel", "an occlusive DVT in the left popliteal vein", "a new LLL infiltrate"]
ORGANISMS = ["E. coli", "Klebsiella", "MRSA", "Enterococcus", "Pseudomonas", "MSSA", "Proteus"]
SYMPTOMS = ["chest pain", "shortness of breath", "fevers", "abdominal pain", "nausea and vomiting",
            "lightheadedness", "black stools", "leg swelling", "confusion", "palpitations", "dysuria", "cough"]
UNITS = ["MICU", "CCU", "SICU", "medicine floor", "cardiology service", "step down unit", "Trauma ICU"]
CONSULTS = ["Cardiology", "GI", "Nephrology", "Infectious Disease", "Renal", "Hepatology", "Surgery",
            "Pulmonary", "Social work", "Palliative care", "Neurology", "Endocrine"]
SPECIALISTS = ["cardiologist", "gastroenterologist", "nephrologist", "hepatologist", "pulmonologist",
               "oncologist", "PCP", "surgeon", "endocrinologist"]
FACILITIES = ["[**Hospital 1474**] rehab", "an extended care facility", "[**Location (un) 620**] nursing home",
              "acute rehab", "[**Hospital3 2558**]"]
SERVICES = ["MEDICINE", "CARDIOLOGY", "SURGERY", "NEUROLOGY", "MEDICINE", "MEDICINE"]
INTERPRETER = ["Spanish", "Russian", "Portuguese", "Cantonese", "Haitian Creole", "Vietnamese"]
RELATIONS = ["his wife", "her husband", "his daughter", "her son", "her sister"]

# ---------------------------------------------------------------- templates
# <N>...</N> marks a category-N span (spans may nest); {slot} is filled, {Slot} capitalised.
# Each entry is "SECTIONS|sentence", sections: H(PI), C(ourse), I(nstructions), F(ollow-up).

DECISION_TEMPLATES: dict[int, list[str]] = {
    1: [
        "H|{Pron} was <1>transferred to {hosp} for further management</1>.",
        "HC|<1>Admitted to the {unit}</1> for closer monitoring.",
        "C|<1>{Consult} was consulted</1> and followed during the admission.",
        "C|{Pron} was <1>called out to the floor</1> on hospital day {n}.",
        "C|<1>Discharged home with VNA services</1>.",
        "C|<1>Discharged to {facility}</1> for rehabilitation.",
        "F|<1>Follow up with Dr. {name} in {k} weeks</1>.",
        "H|<1>Seen by {consult} in the ED</1>.",
        "C|<1>Physical therapy evaluated {obj}</1> prior to discharge.",
        "F|<1>Please call {tel} to schedule an appointment with your {specialist}</1>.",
        "F|<1>You have an appointment with Dr. {name} on {date}</1>.",
    ],
    2: [
        "HC|<2>Blood cultures were sent</2>.",
        "HC|<2>A {imaging} was obtained</2>.",
        "HC|<2>{Lab} was checked</2> on admission.",
        "H|In the ED, <2>a {imaging} was performed</2>.",
        "C|<2>Sent {lab} and {lab2}</2>.",
        "C|<2>Serial troponins were drawn</2>.",
        "C|<2>An echocardiogram was ordered</2> to assess {poss} function.",
        "C|<2>{Imaging} was done to evaluate for <3>{problem}</3></2>.",
        "C|<2>Stool studies were sent for C. diff</2>.",
        "C|{Pron} was <2>monitored on telemetry</2> overnight.",
        "C|<2>Repeat {lab} was drawn</2> in the morning.",
    ],
    3: [
        "HC|{Pron} was found to have <3>{problem}</3>.",
        "C|<3>{Problem}, likely secondary to {cause}</3>.",
        "HC|Diagnosed with <3>{problem}</3>.",
        "C|Presentation was thought to be due to <3>{problem}</3>.",
        "C|<3>{Problem} was ruled out</3>.",
        "H|Concern for <3>{problem}</3> on arrival.",
        "C|Clinical picture was consistent with <3>{problem}</3>.",
        "C|Etiology was felt to be <3>{cause}</3>.",
        "I|You were treated for <3>{problem}</3>.",
    ],
    4: [
        "C|<4>Goal INR 2-3</4>.",
        "C|<4>Target SBP less than {sbp}</4>.",
        "C|{Pron} was diuresed <4>with a goal of {k} liters negative daily</4>.",
        "C|<4>Goal oxygen saturation above {sat}%</4>.",
        "C|<4>Aim for euvolemia</4> prior to discharge.",
        "C|<4>Goal heart rate under {hr}</4>.",
        "C|<4>Keep potassium above 4.0 and magnesium above 2.0</4>.",
        "C|Pressors were <4>titrated to a goal MAP greater than 65</4>.",
        "I|Your <4>goal weight is {weight} lbs</4>.",
        "C|<4>Target HbA1c below 7%</4>.",
    ],
    5: [
        "HC|<5>Started on {drug} {dose} {freq}</5>.",
        "C|<5>{Drug} was discontinued</5> given <3>{problem}</3>.",
        "C|<5>Started {drug} {dose} for <3>{problem}</3></5>.",
        "C|<5>Increased {drug} to {dose} {freq}</5>.",
        "C|<5>{Drug} was held</5> in the setting of <3>{problem}</3>.",
        "C|<5>Switched from {drug} to {drug2}</5>.",
        "CI|<5>Continue {drug} {dose} {freq}</5>.",
        "C|<5>Treated with a {k} day course of {abx}</5>.",
        "H|<5>Received {drug} {dose} IV</5> in the ED.",
        "I|Please <5>stop taking {drug}</5>.",
        "C|<5>Decreased {drug} to {dose}</5> due to <3>{problem}</3>.",
        "I|<5>Start taking {drug} {dose} {freq}</5>.",
    ],
    6: [
        "C|<6>Underwent {procedure}</6> on {date}.",
        "C|<6>{Procedure} was performed</6> without complication.",
        "HC|<6>Intubated for airway protection</6>.",
        "C|<6>Transfused {k} units PRBC</6>.",
        "C|<6>Underwent {procedure} for <3>{problem}</3></6>.",
        "HC|<6>Placed on BiPAP</6> with improvement.",
        "C|<6>Received hemodialysis</6> on hospital day {n}.",
        "C|<6>A PICC line was placed</6> for IV antibiotics.",
        "C|{Pron} was <6>extubated</6> on {date}.",
        "C|<6>Paracentesis removed {k} liters</6> of ascites.",
    ],
    7: [
        "HC|<7>{Imaging} showed {neg_finding}</7>.",
        "C|<7>Cultures remained negative</7>.",
        "C|<7>Troponins were negative x3</7>.",
        "C|<7>Creatinine improved to {val}</7> with hydration.",
        "C|<7>TTE revealed an EF of {ef}%</7>.",
        "C|<7>{Lab} was within normal limits</7>.",
        "C|<7>{Lab} trended down</7> prior to discharge.",
        "C|<7>Urine culture grew {organism}</7>.",
        "HC|<7>{Imaging} showed <3>{pos_finding}</3></7>.",
        "H|Labs were notable for <7>{lab} of {val}</7>.",
    ],
    8: [
        "F|<8>Colonoscopy to be scheduled as an outpatient</8>.",
        "CF|<8>Further workup deferred to {poss} PCP</8>.",
        "F|<8>Biopsy results were pending at discharge</8>.",
        "CF|<8>Consider repeat {imaging} in {k} months</8>.",
        "C|<8>Decision regarding {procedure} deferred to outpatient {specialist}</8>.",
        "F|<8>Will readdress {drug} dosing at follow up</8>.",
        "FI|<8>Please have your {lab} checked in {k} days</8>.",
        "F|<8>Follow up the final read of the {imaging}</8>.",
        "CF|<8>Outpatient sleep study was recommended</8>.",
    ],
    9: [
        "I|<9>Return to the ED if you experience {symptom}</9>.",
        "I|<9>Avoid heavy lifting for {k} weeks</9>.",
        "I|<9>Follow a low sodium diet</9>.",
        "I|<9>Weigh yourself every morning</9>.",
        "I|<9>Do not drive while taking {drug}</9>.",
        "I|<9>Call your doctor for fever greater than 101</9>.",
        "I|<9>Keep the incision clean and dry</9>.",
        "I|<9>Limit fluid intake to 2 liters per day</9>.",
        "I|<9>Do not take NSAIDs</9> such as ibuprofen.",
        "I|<9>Please stop smoking</9>.",
    ],
    10: ["F|<10>Health care proxy is {relation}</10>."],
    11: ["CF|<11>Code status was confirmed as full code</11>."],
}

# Non-decision sentences that reuse the decision vocabulary.
FILLERS: dict[str, list[str]] = {
    "H": [
        "{Pron} takes {drug} at home.",
        "{Pron} reports {symptom} for {k} days.",
        "Denies fevers, chills, or {symptom}.",
        "Prior {imaging} at {hosp} was reportedly unremarkable.",
        "{Pron} had a {procedure} in {year}.",
        "Family history of {problem}.",
        "Recent admission for {problem} in {year}.",
        "{Pron} was recently seen by {poss} {specialist}.",
        "{Pron} was told to follow a low sodium diet in the past but has not adhered.",
        "Per family, {poss} home {drug} was held for {k} days before admission.",
    ],
    "C": [
        "{Pron} remained hemodynamically stable.",
        "Pain was well controlled.",
        "{Drug} allergy was noted on admission.",
        "{Pron} tolerated a regular diet.",
        "{Lab} values were reviewed with the patient.",
        "{Poss} home {drug} was reviewed.",
        "The {consult} team signed off.",
        "{Pron} ambulated with a walker.",
        "Prior {imaging} was reviewed for comparison.",
        "{Pron} has a history of {problem}.",
    ],
    "I": [
        "It was a pleasure taking care of you at {hosp}.",
        "You were admitted with {symptom}.",
        "Your medications are listed below.",
        "You were seen by the {consult} team.",
        "Your {lab} was reviewed before discharge.",
    ],
    "F": [
        "{Specialist} office: {tel}.",
        "Dr. {name} will receive a copy of this summary.",
    ],
}

SECTION_CATEGORY_WEIGHTS: dict[str, dict[int, float]] = {
    "H": {1: 1.0, 2: 1.0, 3: 1.2, 5: 0.6, 6: 0.4, 7: 1.0},
    "C": {1: 0.7, 2: 1.0, 3: 1.1, 4: 0.8, 5: 1.4, 6: 1.0, 7: 1.1, 8: 0.3},
    "I": {3: 0.3, 4: 0.4, 5: 0.6, 8: 0.3, 9: 1.6},
    "F": {1: 1.0, 8: 1.0},
}


# ---------------------------------------------------------------- demographics (stats.csv)

ETHNICITIES = [
    ("W", 40), ("WHITE", 10), ("WHITE - RUSSIAN", 3), ("AA", 10), ("BLACK/AFRICAN AMERICAN", 5),
    ("Hisp.", 7), ("HISPANIC OR LATINO", 3), ("Asian", 5), ("ASIAN - CHINESE", 3), ("OTHER", 4),
    ("UNKNOWN/NOT SPECIFIED", 5), ("NH", 2), ("UNABLE TO OBTAIN", 3),
]
LANGUAGES = [("ENGL", 78), ("Non-ENGL", 14), ("SPAN", 4), ("RUSS", 2), ("", 2)]
