//! Dataset loading: every vendored evaluation set (counts from data/math-eval/README.md), each
//! dataset's reference answers graded against themselves, Python `str()` of numbers, JSONL and the
//! alternative keys, and the errors for malformed files.

use std::path::{Path, PathBuf};

use drpo::data::{answers_from_json, load_problems, python_float_repr, Problem};
use drpo::rl::grader::{grade, GraderConfig};
use drpo::Error;

fn eval_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/math-eval")
}

/// (file, problems) as listed in data/math-eval/README.md.
const SETS: [(&str, usize); 7] = [
    ("aime.json", 30),
    ("aime25.json", 30),
    ("amc.json", 83),
    ("math.json", 500),
    ("minerva.json", 272),
    ("olympiad_bench.json", 675),
    ("gsm8k.json", 1319),
];

#[test]
fn vendored_sets_load_with_readme_counts() {
    for (file, count) in SETS {
        let problems = load_problems(&eval_dir().join(file)).unwrap();
        assert_eq!(problems.len(), count, "{file}");
        for (k, p) in problems.iter().enumerate() {
            assert!(!p.problem.trim().is_empty(), "{file} record {k}: empty problem");
            assert!(!p.answers.is_empty() && p.answers.iter().all(|a| !a.trim().is_empty()), "{file} record {k}");
        }
    }
}

#[test]
fn vendored_values_spot_checks() {
    let load = |f: &str| load_problems(&eval_dir().join(f)).unwrap();
    // AMC: float answers and difficulties, printed as Python's str() prints them
    let amc = load("amc.json");
    assert_eq!(amc[0].answers, vec!["142.0".to_string()]);
    assert_eq!(amc[0].level.as_deref(), Some("2.0"));
    assert_eq!(amc[1].level.as_deref(), Some("4.625"));
    assert!(amc[0].problem.starts_with("$\\frac{m}{n}$ is the Irreducible fraction value"));
    // AIME 2025: integer answers, no level
    let aime25 = load("aime25.json");
    assert_eq!(aime25[0].answers, vec!["70".to_string()]);
    assert_eq!(aime25[0].level, None);
    // MATH500: string answers, numeric difficulty as level
    let math = load("math.json");
    assert_eq!(math[0].answers, vec!["\\left( 3, \\frac{\\pi}{2} \\right)".to_string()]);
    assert_eq!(math[0].level.as_deref(), Some("2.0"));
    // Minerva: lists of 1 to 3 answers, kept verbatim (trailing newline included)
    let minerva = load("minerva.json");
    assert_eq!(minerva[0].answers, vec!["9.6\n".to_string()]);
    assert_eq!(minerva[10].answers, vec!["0.01\n".to_string(), "0.02\n".to_string()]);
    let lens: Vec<usize> = minerva.iter().map(|p| p.answers.len()).collect();
    assert_eq!((1..=3).map(|n| lens.iter().filter(|&&l| l == n).count()).collect::<Vec<_>>(), vec![197, 71, 4]);
    // OlympiadBench: one-element lists
    let olympiad = load("olympiad_bench.json");
    assert!(olympiad.iter().all(|p| p.answers.len() == 1));
    assert_eq!(olympiad[1].answers, vec!["$\\frac{1}{2 n+2}$".to_string()]);
    // GSM8K: plain integers as strings
    assert_eq!(load("gsm8k.json")[0].answers, vec!["18".to_string()]);
}

/// Each reference answer, boxed after `</think>`, must grade correct against its own problem.
#[test]
fn reference_answers_grade_correct_against_themselves() {
    let cfg = GraderConfig::default();
    let mut failures = Vec::new();
    let mut total = 0;
    for (file, _) in SETS {
        let problems = load_problems(&eval_dir().join(file)).unwrap();
        let mut ok = 0;
        let mut n = 0;
        for (k, Problem { answers, .. }) in problems.iter().enumerate() {
            for a in answers {
                n += 1;
                if grade(&format!("</think> \\boxed{{{a}}}"), answers, &cfg) {
                    ok += 1;
                } else {
                    failures.push(format!("{file} record {k}: {a:?}"));
                }
            }
        }
        println!("{file}: {ok}/{n} reference answers graded correct");
        total += n;
    }
    println!("all: {}/{total}", total - failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn numbers_print_like_python_str() {
    // repr() of these floats in CPython
    let cases = [
        (142.0, "142.0"),
        (4.625, "4.625"),
        (-4.0, "-4.0"),
        (0.1, "0.1"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (123456789012345680.0, "1.2345678901234568e+17"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (2.5e300, "2.5e+300"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1.0 / 3.0, "0.3333333333333333"),
    ];
    for (x, want) in cases {
        assert_eq!(python_float_repr(x), want, "{x:e}");
    }
    let j = |v: serde_json::Value| answers_from_json(&v);
    assert_eq!(j(serde_json::json!(70)).unwrap(), vec!["70"]);
    assert_eq!(j(serde_json::json!(-3)).unwrap(), vec!["-3"]);
    assert_eq!(j(serde_json::json!(18446744073709551615u64)).unwrap(), vec!["18446744073709551615"]);
    assert_eq!(j(serde_json::json!([1, 2.0, "x"])).unwrap(), vec!["1", "2.0", "x"]);
    assert_eq!(j(serde_json::json!("Janet ... #### 18")).unwrap(), vec!["18"]);
    assert!(j(serde_json::json!(true)).is_err());
    assert!(j(serde_json::json!(null)).is_err());
    assert!(j(serde_json::json!([])).is_err());
    assert!(j(serde_json::json!([["1"]])).is_err());
    assert!(j(serde_json::json!({"a": 1})).is_err());
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drpo-data-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn jsonl_and_alternative_keys() {
    let dir = temp_dir("jsonl");
    let path = dir.join("set.jsonl");
    let lines = [
        r#"{"question": "How many?", "answer": "Add them.\n#### 72"}"#,
        "",
        r#"{"problem": "Which?", "answer": ["1", 2], "level": "Level 3"}"#,
        r#"{"problem": "Half?", "solution": "So it is $\\boxed{\\frac{1}{2}}$.", "difficulty": 1}"#,
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let got = load_problems(&path).unwrap();
    let want = vec![
        Problem { problem: "How many?".into(), answers: vec!["72".into()], level: None },
        Problem { problem: "Which?".into(), answers: vec!["1".into(), "2".into()], level: Some("Level 3".into()) },
        Problem { problem: "Half?".into(), answers: vec!["\\frac{1}{2}".into()], level: Some("1".into()) },
    ];
    assert_eq!(got, want);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_files_name_file_and_record() {
    let dir = temp_dir("bad");
    let data_cases = [
        // (text, record, words the message must hold)
        (r#"[{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "2"}, {"problem": "c"}]"#, 2, "answer"),
        (r#"[{"answer": "1"}]"#, 0, "problem"),
        (r#"[{"problem": 5, "answer": "1"}]"#, 0, "problem"),
        (r#"[{"problem": "a", "answer": true}]"#, 0, "answer"),
        (r#"[{"problem": "a", "answer": []}]"#, 0, "answer"),
        (r#"[{"problem": "a", "answer": ["1", {"x": 1}]}]"#, 0, "item 1"),
        (r#"[{"problem": "a", "answer": "1", "level": [1]}]"#, 0, "level"),
        (r#"[{"problem": "a", "solution": "no box here"}]"#, 0, "solution"),
        // an empty reference would grade an empty box as correct
        (r#"[{"problem": "a", "answer": "1"}, {"problem": "b", "answer": ""}]"#, 1, "empty answer"),
        (r#"[{"problem": "a", "answer": ["1", "  "]}]"#, 0, "item 1: empty answer"),
        ("[{\"problem\": \"a\", \"answer\": \"#### \"}]", 0, "empty answer"),
        (r#"[{"problem": "a", "solution": "so \\boxed{}"}]"#, 0, "empty"),
        (r#"[{"problem": "a", "answer": "1"}, 7]"#, 1, "object"),
        ("{\"problem\": \"a\", \"answer\": \"1\"}\n{\"problem\": \"b\", \"answer\": \n", 1, "line 2"),
    ];
    for (k, (text, record, words)) in data_cases.iter().enumerate() {
        let path = dir.join(format!("bad{k}.json"));
        std::fs::write(&path, text).unwrap();
        match load_problems(&path) {
            Err(e @ Error::Data { .. }) => {
                let Error::Data { path: p, record: r, what } = &e else { unreachable!() };
                assert_eq!(p, &path);
                assert_eq!(r, record, "{text}");
                assert!(what.contains(words), "{text}: {what}");
                // the message names the file and the record
                let msg = e.to_string();
                assert!(msg.contains(&format!("bad{k}.json")) && msg.contains(&format!("record {record}")), "{msg}");
            }
            other => panic!("{text}: expected Error::Data, got {other:?}"),
        }
    }
    for (k, text) in
        ["[{\"problem\": ", "{\"problem\": \"a\", \"answer\": \"1\"} trailing", "[]", "", "\"text\""].iter().enumerate()
    {
        let path = dir.join(format!("structure{k}.json"));
        std::fs::write(&path, text).unwrap();
        let got = load_problems(&path);
        assert!(matches!(got, Err(Error::Json { .. }) | Err(Error::Data { .. })), "{text:?}: {got:?}");
    }
    assert!(matches!(load_problems(&dir.join("missing.json")), Err(Error::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A UTF-8 byte-order mark (Notepad's "UTF-8 with BOM") is skipped: the file is still a JSON array,
/// not mistaken for JSONL; a JSONL file with a BOM loads too.
#[test]
fn byte_order_mark_is_skipped() {
    let dir = temp_dir("bom");
    let array = dir.join("bom.json");
    std::fs::write(&array, "\u{feff}[{\"problem\": \"a\",\n \"answer\": \"1\"},\n {\"problem\": \"b\", \"answer\": 2}]").unwrap();
    let got = load_problems(&array).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].problem.as_str(), got[1].answers[0].as_str()), ("a", "2"));
    let lines = dir.join("bom.jsonl");
    std::fs::write(&lines, "\u{feff}{\"problem\": \"a\", \"answer\": \"1\"}\n{\"problem\": \"b\", \"answer\": \"2\"}\n").unwrap();
    assert_eq!(load_problems(&lines).unwrap().len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
