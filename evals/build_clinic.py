"""Build ``evals/clinic.sqlite``: a small hospital database for ``evals/clinic.jsonl``.

A second dev set, over a schema unlike Chinook's (snake_case names, a table and columns with spaces, some
foreign keys declared and some only implied by ``*_id`` names), so a change to the data agent can be checked
on data it was not tuned on. Deterministic (fixed seed)::

    python evals/build_clinic.py            # writes evals/clinic.sqlite (replacing it)
"""

from __future__ import annotations

import random
import sqlite3
import sys
from datetime import date, timedelta
from pathlib import Path

SCHEMA = """
CREATE TABLE departments (
    department_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    floor INTEGER
);
CREATE TABLE doctors (
    doctor_id INTEGER PRIMARY KEY,
    first_name TEXT,
    last_name TEXT,
    specialty TEXT,
    department_id INTEGER REFERENCES departments(department_id),
    hire_date TEXT,
    salary REAL
);
CREATE TABLE patients (
    patient_id INTEGER PRIMARY KEY,
    first_name TEXT,
    last_name TEXT,
    birth_date TEXT,
    sex TEXT,
    city TEXT
);
CREATE TABLE appointments (
    appointment_id INTEGER PRIMARY KEY,
    patient_id INTEGER REFERENCES patients(patient_id),
    doctor_id INTEGER REFERENCES doctors(doctor_id),
    appointment_date TEXT,
    status TEXT,
    fee REAL
);
CREATE TABLE "Lab Results" (
    "Result ID" INTEGER PRIMARY KEY,
    "Appointment ID" INTEGER REFERENCES appointments(appointment_id),
    "Test Name" TEXT,
    "Value" REAL,
    "Unit" TEXT
);
CREATE TABLE medications (
    medication_id INTEGER PRIMARY KEY,
    name TEXT,
    unit_price REAL
);
-- No declared foreign keys here: the agent has to infer them from the *_id names.
CREATE TABLE prescriptions (
    prescription_id INTEGER PRIMARY KEY,
    appointment_id INTEGER,
    medication_id INTEGER,
    quantity INTEGER
);
"""

DEPARTMENTS = ["Cardiology", "Neurology", "Pediatrics", "Oncology", "Orthopedics", "Dermatology"]
SPECIALTIES = {
    "Cardiology": ["Cardiologist", "Cardiac Surgeon"],
    "Neurology": ["Neurologist"],
    "Pediatrics": ["Pediatrician"],
    "Oncology": ["Oncologist", "Radiologist"],
    "Orthopedics": ["Orthopedic Surgeon"],
    "Dermatology": ["Dermatologist"],
}
FIRST = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Eva",
    "Felix",
    "Grace",
    "Hugo",
    "Iris",
    "Jonas",
    "Karin",
    "Leo",
    "Mia",
    "Noah",
    "Olga",
    "Paul",
    "Rosa",
    "Sam",
    "Tara",
    "Victor",
    "Wendy",
    "Yusuf",
    "Zoe",
    "Omar",
]
LAST = [
    "Adler",
    "Brooks",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jensen",
    "Kim",
    "Larsen",
    "Meyer",
    "Novak",
    "Olsen",
    "Patel",
    "Quinn",
    "Rossi",
    "Silva",
    "Torres",
    "Ueda",
    "Vogel",
]
CITIES = ["Springfield", "Riverton", "Lakeside", "Hillview", "Fairport"]
TESTS = [
    ("Glucose", "mg/dL", 70, 180),
    ("Cholesterol", "mg/dL", 120, 300),
    ("Hemoglobin", "g/dL", 10, 18),
    ("Vitamin D", "ng/mL", 10, 80),
    ("Creatinine", "mg/dL", 0.5, 1.6),
]
MEDICATIONS = [
    ("Aspirin", 0.15),
    ("Ibuprofen", 0.25),
    ("Amoxicillin", 0.9),
    ("Metformin", 0.3),
    ("Atorvastatin", 1.2),
    ("Lisinopril", 0.45),
    ("Omeprazole", 0.6),
    ("Insulin", 24.5),
    ("Prednisone", 0.35),
    ("Warfarin", 0.8),
    ("Levothyroxine", 0.4),
    ("Sertraline", 1.1),
]


def build(path: Path) -> None:
    rng = random.Random(20261126)
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    for i, name in enumerate(DEPARTMENTS, 1):
        conn.execute("INSERT INTO departments VALUES (?, ?, ?)", (i, name, 1 + (i * 2) % 5))
    # Doctors per department: distinct counts, so "the department with the most doctors" has one answer.
    per_dept = [5, 3, 4, 2, 3, 1]
    doctor_id = 0
    for dept_id, (name, n) in enumerate(zip(DEPARTMENTS, per_dept, strict=True), 1):
        for k in range(n):
            doctor_id += 1
            specialty = SPECIALTIES[name][k % len(SPECIALTIES[name])]
            hired = date(2005, 1, 1) + timedelta(days=rng.randrange(0, 6500))
            conn.execute(
                "INSERT INTO doctors VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    doctor_id,
                    rng.choice(FIRST),
                    LAST[(doctor_id * 7) % len(LAST)],
                    specialty,
                    dept_id,
                    hired.isoformat(),
                    float(rng.randrange(150, 400) * 1000),
                ),
            )
    n_doctors = doctor_id
    for pid in range(1, 121):
        born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 30000))
        conn.execute(
            "INSERT INTO patients VALUES (?, ?, ?, ?, ?, ?)",
            (
                pid,
                rng.choice(FIRST),
                rng.choice(LAST),
                born.isoformat(),
                rng.choice("FM"),
                CITIES[rng.randrange(0, 5) if pid % 3 else pid % 2],
            ),
        )
    # Patients 111-120 never have an appointment.
    weights = [1 + (d * 13) % 7 for d in range(1, n_doctors + 1)]
    for aid in range(1, 401):
        day = date(2022, 1, 1) + timedelta(days=rng.randrange(0, 3 * 365))
        status = rng.choices(["completed", "cancelled", "no-show"], [8, 2, 1])[0]
        doctor = rng.choices(range(1, n_doctors + 1), weights)[0]
        fee = round(rng.choice([60, 80, 120, 150, 200]) * (1.0 if status == "completed" else 0.0), 2)
        conn.execute(
            "INSERT INTO appointments VALUES (?, ?, ?, ?, ?, ?)",
            (aid, rng.randrange(1, 111), doctor, day.isoformat(), status, fee),
        )
    done = conn.execute("SELECT appointment_id FROM appointments WHERE status = 'completed'")
    completed = [r[0] for r in done]
    for rid in range(1, 301):
        test, unit, lo, hi = TESTS[rng.choices(range(5), [5, 4, 3, 2, 1])[0]]
        conn.execute(
            'INSERT INTO "Lab Results" VALUES (?, ?, ?, ?, ?)',
            (rid, rng.choice(completed), test, round(rng.uniform(lo, hi), 1), unit),
        )
    for i, (name, price) in enumerate(MEDICATIONS, 1):
        conn.execute("INSERT INTO medications VALUES (?, ?, ?)", (i, name, price))
    for pid in range(1, 251):
        med = rng.choices(range(1, 13), [9, 8, 3, 7, 5, 4, 6, 1, 2, 2, 3, 1])[0]
        conn.execute(
            "INSERT INTO prescriptions VALUES (?, ?, ?, ?)",
            (pid, rng.choice(completed), med, rng.choice([10, 20, 30, 60, 90])),
        )
    conn.commit()
    conn.close()


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "clinic.sqlite"
    build(out)
    print(out)
