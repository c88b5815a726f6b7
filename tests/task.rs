//! The synthetic task: generator, traces, verifier and tokenizer, each against values the test
//! derives itself (left-to-right mod-10 evaluation, the token layout written out by hand).

use std::collections::HashSet;
use std::path::PathBuf;

use drpo::task::{
    generate_split, prompt_tokens, render_shaped, render_trace, split_of, trace_tokens, verify, write_task_tokenizer,
    Split, TaskConfig, TaskExample, TraceMix, TraceShape, Verdict,
};
use drpo::tokenizer::{ChatFamily, Tokenizer};
use drpo::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seeded rng; TEST_SEED=<n> replays a run.
fn rng(test: &str) -> StdRng {
    let seed = match std::env::var("TEST_SEED") {
        Ok(s) => s.parse().unwrap(),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    println!("{test}: TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// The question evaluated left to right, mod 10, from its text alone.
fn eval_question(q: &str) -> u8 {
    let chars: Vec<char> = q.chars().collect();
    let mut acc = chars[0].to_digit(10).unwrap() as i64;
    for pair in chars[1..].chunks(2) {
        let x = pair[1].to_digit(10).unwrap() as i64;
        acc = match pair[0] {
            '+' => acc + x,
            '-' => acc - x,
            '*' => acc * x,
            c => panic!("operator {c}"),
        }
        .rem_euclid(10);
    }
    acc as u8
}

/// The partial results of the question, p_0..p_k.
fn partials_of(q: &str) -> Vec<u8> {
    (0..q.len() / 2 + 1).map(|i| eval_question(&q[..2 * i + 1])).collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drpo-test-task-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn all_questions(level: usize) -> Vec<String> {
    let mut qs = vec![String::new()];
    for pos in 0..2 * level + 1 {
        let alphabet: &[char] = if pos % 2 == 0 { &['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'] } else { &['+', '-', '*'] };
        qs = qs.iter().flat_map(|q| alphabet.iter().map(move |c| format!("{q}{c}"))).collect();
    }
    qs
}

fn sample_examples(seed: u64, n: usize) -> Vec<TaskExample> {
    let cfg = TaskConfig { seed, ..TaskConfig::default() };
    let mut v = generate_split(&cfg, Split::Train, n).unwrap();
    v.extend(generate_split(&cfg, Split::Eval, n).unwrap());
    v
}

#[test]
fn generator_is_deterministic() {
    let cfg = TaskConfig { min_level: 1, max_level: 5, seed: 7 };
    for split in [Split::Train, Split::Eval] {
        let a = generate_split(&cfg, split, 300).unwrap();
        assert_eq!(a, generate_split(&cfg, split, 300).unwrap());
        assert_eq!(&a[..100], generate_split(&cfg, split, 100).unwrap().as_slice(), "prefix");
        let other = generate_split(&TaskConfig { seed: 8, ..cfg.clone() }, split, 300).unwrap();
        let differing = a.iter().zip(&other).filter(|(x, y)| x != y).count();
        assert!(differing > 250, "seed 7 vs 8 differ in only {differing} of 300");
    }
    assert!(generate_split(&TaskConfig { min_level: 0, max_level: 3, seed: 0 }, Split::Train, 1).is_err());
    assert!(generate_split(&TaskConfig { min_level: 4, max_level: 3, seed: 0 }, Split::Train, 1).is_err());
    assert!(generate_split(&TaskConfig { min_level: 1, max_level: 9, seed: 0 }, Split::Train, 1).is_err());
}

#[test]
fn levels_match_step_counts_and_answers() {
    let cfg = TaskConfig { min_level: 2, max_level: 6, seed: 3 };
    for split in [Split::Train, Split::Eval] {
        for (i, ex) in generate_split(&cfg, split, 500).unwrap().iter().enumerate() {
            let level = 2 + i % 5;
            assert_eq!(ex.level, level);
            assert_eq!(ex.necessary_steps, level);
            assert_eq!(ex.ops.len(), level);
            assert_eq!(ex.operands.len(), level + 1);
            assert_eq!(ex.question.len(), 2 * level + 1);
            assert_eq!(ex.answer, eval_question(&ex.question), "{}", ex.question);
            assert_eq!(ex.partials(), partials_of(&ex.question));
            assert_eq!(&TaskExample::parse(&ex.question).unwrap(), ex);
            let p = partials_of(&ex.question);
            for s in 1..=level {
                assert_eq!(ex.step_text(s), format!("{}{}={}", p[s - 1], &ex.question[2 * s - 1..2 * s + 1], p[s]));
            }
        }
    }
    // hand-checked: 3+4=7, 7*2=14->4, 4-5=-1->9
    let ex = TaskExample::parse("3+4*2-5").unwrap();
    assert_eq!((ex.answer, ex.partials()), (9, vec![3, 7, 4, 9]));
    for bad in ["", "3", "3+", "3+4*", "34", "3/4", "+3+4", "3 + 4", "3+10"] {
        assert!(TaskExample::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn train_and_eval_are_disjoint() {
    let mut train = HashSet::new();
    let mut eval = HashSet::new();
    for seed in 0..4 {
        let cfg = TaskConfig { seed, ..TaskConfig::default() };
        train.extend(generate_split(&cfg, Split::Train, 1000).unwrap().into_iter().map(|e| e.question));
        eval.extend(generate_split(&cfg, Split::Eval, 1000).unwrap().into_iter().map(|e| e.question));
    }
    assert!(train.is_disjoint(&eval), "{:?}", train.intersection(&eval).next());
    assert!(train.iter().all(|q| split_of(q) == Split::Train));
    assert!(eval.iter().all(|q| split_of(q) == Split::Eval));
    // about a quarter of each level's questions is held out; level 1 has 300
    for level in 1..=3 {
        let qs = all_questions(level);
        let held = qs.iter().filter(|q| split_of(q) == Split::Eval).count() as f64 / qs.len() as f64;
        assert!((0.18..0.32).contains(&held), "level {level}: eval fraction {held}");
    }
    // level 1: distinct while the pool allows (64 tries per question)
    let cfg = TaskConfig { min_level: 1, max_level: 1, seed: 11 };
    let ev = generate_split(&cfg, Split::Eval, 40).unwrap();
    assert_eq!(ev.iter().map(|e| &e.question).collect::<HashSet<_>>().len(), 40);
}

/// The trace split by the test itself: (step pieces, check values, boxed answer).
fn parse_trace(trace: &str) -> (Vec<String>, Vec<u8>, u8) {
    let body = trace.strip_suffix("}<|im_end|>").unwrap();
    let (steps, answer) = body.rsplit_once("\\boxed{").unwrap();
    let pieces: Vec<&str> = steps.strip_suffix(';').unwrap().split(';').collect();
    let checks = pieces.iter().filter_map(|p| p.strip_prefix("check ")).map(|v| v.parse().unwrap()).collect();
    let steps = pieces.iter().filter(|p| !p.starts_with("check")).map(|p| p.to_string()).collect();
    (steps, checks, answer.parse().unwrap())
}

#[test]
fn rendered_traces_verify_with_right_counts() {
    let mut rng = rng("rendered_traces_verify_with_right_counts");
    for ex in sample_examples(5, 200) {
        let k = ex.level;
        let p = partials_of(&ex.question);
        for r in 0..=2 * k {
            let trace = render_trace(&ex, r, &mut rng);
            let (steps, checks, boxed) = parse_trace(&trace);
            assert_eq!(boxed, eval_question(&ex.question), "{trace}");
            assert_eq!(steps.len(), k, "{trace}");
            for (s, piece) in steps.iter().enumerate() {
                let q = &ex.question;
                assert_eq!(piece, &format!("{}{}={}", p[s], &q[2 * s + 1..2 * s + 3], p[s + 1]), "{trace}");
            }
            // every check restates the partial written just before it
            let mut last = None;
            for piece in trace.split(';') {
                if let Some(v) = piece.strip_prefix("check ") {
                    assert_eq!(Some(v.parse::<u8>().unwrap()), last, "{trace}");
                } else if let Some((_, r)) = piece.split_once('=') {
                    last = Some(r.parse::<u8>().unwrap());
                }
            }
            assert_eq!(checks.len(), r);
            let v = verify(&ex, &trace);
            let want = Verdict {
                correct: true,
                answer: Some(u64::from(eval_question(&ex.question))),
                useful_steps: k,
                shortcut_steps: 0,
                ops_written: k,
                useless_steps: r,
                wrong_steps: 0,
                unrecognised_steps: 0,
                chain_steps: k,
                folded_steps: 0,
                checks: r,
                malformed: false,
            };
            assert_eq!(v, want, "{trace}");
            assert_eq!(v.reward(), 1.0);
        }
    }
}

#[test]
fn corrupted_answers_and_partials_are_caught() {
    let mut rng = rng("corrupted_answers_and_partials_are_caught");
    let mut became_wrong = 0;
    let mut cases = 0;
    for ex in sample_examples(9, 100) {
        let k = ex.level;
        let ans = eval_question(&ex.question);
        let p = partials_of(&ex.question);
        let trace = render_trace(&ex, rng.random_range(0..=k), &mut rng);
        let clean = verify(&ex, &trace);

        // boxed answer changed
        for d in 1..10u8 {
            let wrong = (ans + d) % 10;
            let t = trace.replace(&format!("\\boxed{{{ans}}}"), &format!("\\boxed{{{wrong}}}"));
            let v = verify(&ex, &t);
            assert!(!v.correct && v.answer == Some(u64::from(wrong)) && v.reward() == 0.0, "{t}");
            assert_eq!((v.useful_steps, v.useless_steps), (clean.useful_steps, clean.useless_steps));
        }

        let s = rng.random_range(1..=k);
        let d = rng.random_range(1..10u8);
        let q = &ex.question;
        // one partial result wrong, nothing else touched: outcome grading keeps the answer right,
        // the wrong step is no longer a step of the solution
        let mut pieces = Vec::new();
        for i in 1..=k {
            let r = if i == s { (p[i] + d) % 10 } else { p[i] };
            pieces.push(format!("{}{}={r};", p[i - 1], &q[2 * i - 1..2 * i + 1]));
        }
        let t = format!("{}\\boxed{{{ans}}}<|im_end|>", pieces.concat());
        let v = verify(&ex, &t);
        assert!(v.correct, "{t}");
        assert_eq!((v.useful_steps, v.wrong_steps, v.chain_steps), (k - 1, 1, k), "{t}");
        assert_eq!(v.ops_written, k - 1, "{t}");

        // the wrong partial carried forward, as a model would: the answer changes unless a later
        // operation erases the difference (e.g. *0)
        let mut cur = p[..s].to_vec();
        cur.push((p[s] + d) % 10);
        for i in s + 1..=k {
            let next = eval_question(&format!("{}{}", cur[i - 1], &q[2 * i - 1..2 * i + 1]));
            cur.push(next);
        }
        let pieces: Vec<String> = (1..=k).map(|i| format!("{}{}={};", cur[i - 1], &q[2 * i - 1..2 * i + 1], cur[i])).collect();
        let t = format!("{}\\boxed{{{}}}<|im_end|>", pieces.concat(), cur[k]);
        let v = verify(&ex, &t);
        assert_eq!(v.correct, cur[k] == ans, "{t}");
        assert_eq!(v.answer, Some(u64::from(cur[k])));
        // a step built on the wrong value can coincide with a correct piece written before (0*5=0
        // twice): then it is a repeat, not wrong
        assert!(v.useful_steps < k && v.useful_steps + v.useless_steps + v.wrong_steps == k && v.chain_steps == k, "{t}");
        cases += 1;
        became_wrong += usize::from(!v.correct);
    }
    println!("carried-forward corruption changed the answer in {became_wrong} of {cases}");
    assert!(became_wrong * 2 > cases);
}

#[test]
fn malformed_responses_get_zero_and_never_panic() {
    let ex = TaskExample::parse("3+4*2-5").unwrap(); // 3+4=7;7*2=4;4-5=9
    let steps = "3+4=7;7*2=4;4-5=9;";
    let cases: Vec<(String, Option<u64>)> = vec![
        (String::new(), None),
        ("no answer here".into(), None),
        (steps.to_string(), None),
        (format!("{steps}\\boxed{{9"), None),         // unclosed
        (format!("{steps}\\boxed{{{{9}}"), None),     // \boxed{{9} unclosed
        (format!("{steps}\\boxed 9"), None),          // no brace
        (format!("{steps}\\boxed{{}}"), None),        // empty
        (format!("{steps}\\boxed{{x}}"), None),       // not a number
        (format!("{steps}\\boxed{{-1}}"), None),      // not a plain non-negative integer
        (format!("{steps}\\boxed{{9.0}}"), None),
        (format!("{steps}\\boxed{{99999999999999999999999}}"), None), // overflows u64
        (format!("{steps}\\boxed{{9}}\\boxed{{"), None), // last \boxed unclosed
        (format!("{steps}\\boxed{{9}}\\boxed{{4}}<|im_end|>"), Some(4)), // two answers: last counts
        (format!("{steps}\\boxed{{ 19 }}"), Some(19)),
        ("}}}{{{\\boxed}}{{".into(), None),
        ("\\boxed{\\boxed{9".into(), None),
        ("é\\boxed{٩}".into(), None), // Arabic-Indic nine is not an ASCII digit
    ];
    for (text, want_answer) in cases {
        let v = verify(&ex, &text);
        assert_eq!(v.answer, want_answer, "{text:?}");
        assert_eq!(v.malformed, want_answer.is_none(), "{text:?}");
        assert!(!v.correct && v.reward() == 0.0, "{text:?}");
    }
    // the last answer counts the other way round too; a nested box is graded by its inner one
    for text in [format!("{steps}\\boxed{{4}}\\boxed{{9}}"), "\\boxed{\\boxed{9}".to_string(), "\\boxed{09}".into()] {
        assert!(verify(&ex, &text).correct, "{text}");
    }
    // without steps the answer alone is still correct (outcome grading)
    let v = verify(&ex, "\\boxed{9}<|im_end|>");
    assert!(v.correct && v.is_guess() && v.useful_steps == 0 && v.useless_steps == 0 && v.chain_steps == 0);
    // steps with spaces and newlines, checks of unwritten values, prose, a repeat, a slip
    let v = verify(&ex, "3 + 4 = 7;\ncheck 7; check 4; 7*2=4; hmm; 3+4=7; 7*2=5;\\boxed{9}");
    assert_eq!((v.useful_steps, v.useless_steps, v.wrong_steps, v.unrecognised_steps), (2, 2, 1, 2));
    assert_eq!((v.chain_steps, v.checks, v.ops_written), (4, 2, 2));

    // random bytes and random mixes of task pieces
    let mut rng = rng("malformed_responses_get_zero_and_never_panic");
    let atoms = ["\\boxed", "{", "}", "9", "3+4=7", ";", "check 7", "<|im_end|>", " ", "\n", "\\", "é", "\u{0}"];
    for _ in 0..5000 {
        let text = if rng.random_bool(0.5) {
            let bytes: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            (0..rng.random_range(0..24)).map(|_| atoms[rng.random_range(0..atoms.len())]).collect()
        };
        let v = verify(&ex, &text);
        assert_eq!(v.malformed, v.answer.is_none(), "{text:?}");
        assert_eq!(v.correct, v.answer == Some(9), "{text:?}");
        assert!(v.useful_steps <= 3 && v.ops_written <= 3);
    }
}

#[test]
fn task_tokenizer_vocab_and_roundtrip() {
    let dir = temp_dir("tokenizer");
    write_task_tokenizer(&dir).unwrap();
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["tokenizer.json", "tokenizer_config.json"], "no temporary files left");
    // the Python `tokenizers` (what transformers loads tokenizer.json with) compiles the pattern with
    // Oniguruma, which rejects inline flag groups like `(?s:.)` (found by tests/hf/check_checkpoint.py)
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    let pattern = json["pre_tokenizer"]["pattern"]["Regex"].as_str().unwrap();
    assert!(!pattern.contains("(?"), "an inline group in the pre-tokenizer pattern: {pattern}");

    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap().vocab_size(), 26);
    let vocab = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "-", "*", "=", ";", " ", "\n", "\\boxed{", "}", "check",
        "system", "user", "assistant", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    ];
    assert_eq!(tok.vocab_size(), vocab.len());
    for (id, t) in vocab.iter().enumerate() {
        assert_eq!(tok.token_to_id(t), Some(id as u32), "{t:?}");
    }
    assert_eq!(tok.eos_ids(), &[25]);
    assert_eq!(tok.pad_id(), Some(23));
    assert_eq!(tok.chat_family(), ChatFamily::ChatMl);
    assert_eq!(tok.default_system_prompt(), None);
    assert!(!tok.opens_think_block());

    // hand-encoded
    let ids = tok.encode("3+4=7;check 7;\\boxed{7}<|im_end|>").unwrap();
    assert_eq!(ids, [3, 10, 4, 13, 7, 14, 19, 15, 7, 14, 17, 7, 18, 25]);
    let ids = tok.encode("<|im_start|>user\n3+4<|im_end|>\n<|im_start|>assistant\n").unwrap();
    assert_eq!(ids, [24, 21, 16, 3, 10, 4, 25, 16, 24, 22, 16]);
    // outside the alphabet: an error, not a silent unknown token
    assert!(matches!(tok.encode("3+x"), Err(Error::Tokenizer { .. })));

    let mut rng = rng("task_tokenizer_vocab_and_roundtrip");
    for ex in sample_examples(21, 100) {
        let k = ex.level;
        let prompt = tok.apply_chat_template(&ex.messages(), true).unwrap();
        assert_eq!(prompt, ex.prompt());
        assert_eq!(prompt, format!("<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n", ex.question));
        let prompt_ids = tok.encode(&prompt).unwrap();
        // <|im_start|> user \n, one token per question character, <|im_end|> \n <|im_start|> assistant \n
        assert_eq!(prompt_ids.len(), 3 + (2 * k + 1) + 5);
        assert_eq!(prompt_tokens(k), prompt_ids.len());
        assert_eq!(tok.decode(&prompt_ids, false).unwrap(), prompt);
        for r in 0..=k + 1 {
            let trace = render_trace(&ex, r, &mut rng);
            let ids = tok.encode(&trace).unwrap();
            // a o b = r ; per step, check ␣ d ; per check, \boxed{ d } <|im_end|>
            assert_eq!(ids.len(), 6 * k + 4 * r + 4, "{trace}");
            assert_eq!(trace_tokens(k, r), ids.len());
            assert_eq!(*ids.last().unwrap(), 25);
            assert_eq!(tok.decode(&ids, false).unwrap(), trace);
            assert_eq!(tok.decode(&ids, true).unwrap(), trace.strip_suffix("<|im_end|>").unwrap());
            // prompt + response encode as the concatenation (the template never merges across)
            let mut both = prompt_ids.clone();
            both.extend(&ids);
            assert_eq!(tok.encode(&format!("{prompt}{trace}")).unwrap(), both);
        }
        // shortcut steps and guesses: 2m + 4 tokens per step of m operations, 4 for a guess
        for shape in [TraceShape { chunks: random_chunks(k, &mut rng), checks: rng.random_range(0..3) }, TraceShape::guess()] {
            let trace = render_shaped(&ex, &shape, &mut rng).unwrap();
            let ids = tok.encode(&trace).unwrap();
            assert_eq!(ids.len(), shape.tokens(), "{trace}");
            assert_eq!(tok.decode(&ids, false).unwrap(), trace);
        }
    }
    // hardest default level: prompt 19, concise 34 tokens
    assert_eq!((prompt_tokens(5), trace_tokens(5, 0), trace_tokens(5, 6)), (19, 34, 58));

    // any id sequence decodes and grades without panicking
    let ex = TaskExample::parse("1+2").unwrap();
    for _ in 0..2000 {
        let ids: Vec<u32> = (0..rng.random_range(0..40)).map(|_| rng.random_range(0..26)).collect();
        let text = tok.decode(&ids, false).unwrap();
        let v = verify(&ex, &text);
        assert_eq!(v.malformed, v.answer.is_none());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A random composition of k into parts of 1 and 2 (the shapes the SFT mixture writes), drawn by the test.
fn random_chunks(k: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut c = Vec::new();
    let mut left = k;
    while left > 0 {
        let m = if left >= 2 && rng.random_bool(0.5) { 2 } else { 1 };
        c.push(m);
        left -= m;
    }
    c
}

#[test]
fn shaped_traces_verify_with_right_counts() {
    let mut rng = rng("shaped_traces_verify_with_right_counts");
    for ex in sample_examples(13, 200) {
        let k = ex.level;
        let p = partials_of(&ex.question);
        let chunks = random_chunks(k, &mut rng);
        let checks = rng.random_range(0..=k + 2);
        let shape = TraceShape { chunks: chunks.clone(), checks };
        let trace = render_shaped(&ex, &shape, &mut rng).unwrap();
        // the steps, as the test reads them: each from the partial the previous one ended at
        let (steps, check_values, boxed) = parse_trace(&trace);
        assert_eq!(boxed, eval_question(&ex.question), "{trace}");
        assert_eq!(steps.len(), chunks.len(), "{trace}");
        let mut at = 0;
        for (piece, &m) in steps.iter().zip(&chunks) {
            let q = &ex.question;
            assert_eq!(piece, &format!("{}{}={}", p[at], &q[2 * at + 1..2 * (at + m) + 1], p[at + m]), "{trace}");
            at += m;
        }
        assert_eq!(check_values.len(), checks);
        // 2m + 4 tokens per step of m operations, 4 per check, 4 for the answer and EOS
        let want_tokens = chunks.iter().map(|m| 2 * m + 4).sum::<usize>() + 4 * checks + 4;
        assert_eq!(shape.tokens(), want_tokens);
        assert_eq!(shape.unwritten_partials(k), k - chunks.len());
        let folded = chunks.iter().filter(|&&m| m == 2).count();
        let v = verify(&ex, &trace);
        let want = Verdict {
            correct: true,
            answer: Some(u64::from(eval_question(&ex.question))),
            useful_steps: chunks.len(),
            shortcut_steps: folded,
            ops_written: k,
            useless_steps: checks,
            wrong_steps: 0,
            unrecognised_steps: 0,
            chain_steps: chunks.len(),
            folded_steps: folded,
            checks,
            malformed: false,
        };
        assert_eq!(v, want, "{trace}");
    }
    // a guess: the answer alone, 4 tokens, k − 1 partials unwritten; shapes that do not fit are refused
    let ex = TaskExample::parse("3+4*2-5").unwrap();
    let guess = render_shaped(&ex, &TraceShape::guess(), &mut rng).unwrap();
    assert_eq!(guess, "\\boxed{9}<|im_end|>");
    assert_eq!((TraceShape::guess().tokens(), TraceShape::guess().unwritten_partials(3)), (4, 2));
    let v = verify(&ex, &guess);
    assert!(v.correct && v.is_guess() && v.ops_written == 0);
    for bad in [TraceShape { chunks: vec![2], checks: 0 }, TraceShape { chunks: vec![2, 2], checks: 0 }, TraceShape { chunks: vec![], checks: 1 }, TraceShape { chunks: vec![0, 3], checks: 0 }] {
        assert!(render_shaped(&ex, &bad, &mut rng).is_err(), "{bad:?}");
    }
    // the old full-granularity renderer is the all-ones shape
    assert_eq!(render_trace(&ex, 0, &mut rng), "3+4=7;7*2=4;4-5=9;\\boxed{9}<|im_end|>");
    assert_eq!(render_shaped(&ex, &TraceShape { chunks: vec![2, 1], checks: 0 }, &mut rng).unwrap(), "3+4*2=4;4-5=9;\\boxed{9}<|im_end|>");
}

#[test]
fn trace_mix_draws_the_configured_shares() {
    let mut rng = rng("trace_mix_draws_the_configured_shares");
    let mix = TraceMix { guess_share: 0.15, shortcut_share: 0.4, concise_share: 0.25, extra_checks: 2 };
    let n = 40_000;
    let (mut guesses, mut shortcuts, mut others, mut concise) = (0, 0, 0, 0);
    for i in 0..n {
        let k = 2 + i % 5;
        let shape = mix.sample(k, &mut rng);
        if shape.chunks.is_empty() {
            assert_eq!(shape.checks, 0);
            guesses += 1;
            continue;
        }
        assert_eq!(shape.chunks.iter().sum::<usize>(), k, "{shape:?}");
        assert!(shape.chunks.iter().all(|&m| m == 1 || m == 2), "{shape:?}");
        if shape.chunks.contains(&2) {
            shortcuts += 1;
        } else {
            assert_eq!(shape.chunks.len(), k);
        }
        others += 1;
        assert!(shape.checks <= k + 2);
        concise += usize::from(shape.checks == 0);
    }
    // binomial sd ≤ 0.0025 at these counts: 4 sd
    let share = |a: usize, b: usize| a as f64 / b as f64;
    assert!((share(guesses, n) - 0.15).abs() < 0.01, "guesses {}", share(guesses, n));
    assert!((share(shortcuts, others) - 0.4).abs() < 0.012, "shortcuts {}", share(shortcuts, others));
    assert!((share(concise, others) - 0.25).abs() < 0.012, "concise {}", share(concise, others));
    // level 1 has no shortcut; shares of 0 draw the full-granularity traces only
    assert!((0..200).all(|_| !mix.sample(1, &mut rng).chunks.contains(&2)));
    let plain = TraceMix { guess_share: 0.0, shortcut_share: 0.0, ..mix.clone() };
    assert!((0..200).all(|_| plain.sample(4, &mut rng).chunks == vec![1; 4]));
    assert!(TraceMix { guess_share: 1.5, ..mix.clone() }.validate("trace mix").is_err());
    assert!(TraceMix { shortcut_share: -0.1, ..mix }.validate("trace mix").is_err());
}

/// Correction mechanics: a slip, the steps built on it, a fix; the verdict is the final box's.
#[test]
fn slips_and_fixes_are_graded_on_the_final_box() {
    let ex = TaskExample::parse("3+4*2-5").unwrap(); // 3+4=7; 7*2=4; 4-5=9
    // (text, correct, (useful, useless, wrong, ops written))
    type Case<'a> = (&'a str, bool, (usize, usize, usize, usize));
    let cases: &[Case] = &[
        ("3+4=8;3+4=7;7*2=4;4-5=9;\\boxed{9}", true, (3, 0, 1, 3)),          // slip, then fixed at once
        ("3+4=8;8*2=6;6-5=1;\\boxed{1}", false, (0, 0, 3, 0)),                // slip carried to the end
        ("3+4=8;8*2=6;6-5=1;\\boxed{1};3+4=7;7*2=4;4-5=9;\\boxed{9}", true, (3, 0, 3, 3)), // redone after a first answer
        ("3+4=7;7*2=4;4-5=9;\\boxed{9};\\boxed{1}", false, (3, 0, 0, 3)),     // right steps, wrong last box
        ("3+4*2=4;4-5=9;\\boxed{9}", true, (2, 0, 0, 3)),                     // a shortcut step
        ("3+4*2=5;5-5=0;\\boxed{0}", false, (0, 0, 2, 0)),                    // a shortcut slip
        ("3+4*2=5;3+4=7;7*2=4;4-5=9;\\boxed{9}", true, (3, 0, 1, 3)),         // a shortcut slip, fixed step by step
        ("3+4=7;3+4*2=4;3+4*2=4;4-5=9;check 9;\\boxed{9}", true, (3, 2, 0, 3)), // overlap covers a new op; a repeat
        ("3+4=7;7*2-5=9;\\boxed{9}", true, (2, 0, 0, 3)),
        ("\\boxed{9}", true, (0, 0, 0, 0)),                                    // a guess
    ];
    for &(text, correct, (useful, useless, wrong, ops)) in cases {
        let v = verify(&ex, text);
        assert_eq!(v.correct, correct, "{text}");
        assert_eq!((v.useful_steps, v.useless_steps, v.wrong_steps, v.ops_written), (useful, useless, wrong, ops), "{text}");
    }
    // shortcut steps are counted as such
    let v = verify(&ex, "3+4*2=4;4-5=9;\\boxed{9}");
    assert_eq!((v.shortcut_steps, v.folded_steps, v.chain_steps), (1, 1, 2));
}
