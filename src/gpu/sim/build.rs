//! A kernel family as a loaded simulator module: its source with `__shared__` declarations rewritten,
//! the kernels it defines found, a translation unit of `cuda/sim/cuda_sim.h` + the family + a
//! generated kernel table compiled by the host's C++ compiler into a shared object (cached on disk
//! by a hash of that text, the options and the compiler's version), then dlopen'ed. Once per family
//! and process; concurrent processes compiling the same family each write their own temp file and
//! rename it into place.

use crate::error::{Error, Result};
use crate::gpu::{cache_dir, fnv1a, Family};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

/// The emulation header, the first part of every translation unit.
pub(crate) const HEADER: &str = include_str!("../../../cuda/sim/cuda_sim.h");

/// Host compiler options. -fno-strict-aliasing: kernels read bf16 arrays through `unsigned*` and
/// `uint4*`, which CUDA allows; -ffp-contract=off: every f32 operation rounded on its own, as
/// written; -fno-math-errno: sqrtf etc. inline (errno means nothing to a kernel).
const CXX_FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-shared",
    "-fvisibility=hidden",
    "-fno-strict-aliasing",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-w",
];

/// [`CXX_FLAGS`], plus `-mfma` where this CPU has FMA: `fmaf` (the SIMT kernels' inner loop) then
/// compiles to the instruction instead of a libm call, with the same (fused, correctly rounded) result.
/// The flags are part of the cache key, so a cache shared with a CPU without FMA is not confused.
fn flags() -> Vec<&'static str> {
    let mut f = CXX_FLAGS.to_vec();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        f.push("-mfma");
    }
    f
}

/// The C++ compiler: `$CXX` (a program and its leading arguments), else `g++`.
#[derive(Clone, Debug)]
pub(crate) struct Compiler {
    pub argv: Vec<String>,
    /// first line of `--version`
    pub version: String,
}

pub(crate) fn compiler() -> Result<Compiler> {
    static FOUND: OnceLock<std::result::Result<Compiler, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let (argv, from) = match std::env::var("CXX").ok().filter(|s| !s.trim().is_empty()) {
                Some(cxx) => (cxx.split_whitespace().map(str::to_string).collect::<Vec<_>>(), "$CXX"),
                None => (vec!["g++".to_string()], "the default"),
            };
            let out = Command::new(&argv[0]).args(&argv[1..]).arg("--version").stdin(Stdio::null()).output();
            match out {
                Ok(o) if o.status.success() => {
                    let version = String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_string();
                    Ok(Compiler { argv, version })
                }
                Ok(o) => Err(format!("`{} --version` ({from} C++ compiler) failed: {}", argv.join(" "), String::from_utf8_lossy(&o.stderr).trim())),
                Err(e) => Err(format!(
                    "no C++ compiler: `{}` ({from}) cannot be run ({e}); install g++ or set CXX to a C++17 compiler",
                    argv.join(" ")
                )),
            }
        })
        .clone()
        .map_err(|why| Error::NoDevice { why: format!("the simulated device needs a C++ compiler: {why}") })
}

// ---------------------------------------------------------------------------------------------
// The loaded module.

/// `drpo_sim::KernelInfo` of cuda_sim.h.
#[repr(C)]
pub(crate) struct KernelInfo {
    name: *const c_char,
    call: *const c_void,
    max_threads: u32,
    signature: *const c_char,
    params: *const c_char,
}

pub(crate) type RunFn = unsafe extern "C" fn(*const KernelInfo, *const super::LaunchC, *mut *mut c_void, *mut super::ReportC) -> c_int;
pub(crate) type FaultFn = unsafe extern "C" fn(u64, c_int, c_int);

pub(crate) struct Kernel {
    pub info: *const KernelInfo,
    /// `__launch_bounds__`, 0 when none
    pub max_threads: u32,
    /// one code per parameter (cuda_sim.h: `KernelInfo::signature`)
    pub signature: Vec<String>,
    pub params: Vec<String>,
}

pub(crate) struct Module {
    pub run: RunFn,
    pub fault: FaultFn,
    pub kernels: HashMap<String, Kernel>,
}

// SAFETY: the module's code and its kernel table are immutable once loaded (the table lives in the
// shared object, which is never unloaded); per-thread state lives in the module's thread_locals.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

type Slot = Arc<OnceLock<std::result::Result<Arc<Module>, (bool, String)>>>;

/// The loaded module of `family`, compiling it on first use (once per process; a family is a
/// `static`, so its address names it).
pub(crate) fn module(family: &'static Family) -> Result<Arc<Module>> {
    static MODULES: OnceLock<Mutex<HashMap<usize, Slot>>> = OnceLock::new();
    let slot = {
        let mut map = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        map.entry(family as *const Family as usize).or_default().clone()
    };
    // other threads asking for the same family wait here for the one compile
    let r = slot.get_or_init(|| {
        load(family, &family.source()).map(Arc::new).map_err(|e| match e {
            Error::NoDevice { why } => (true, why),
            e => (false, e.to_string()),
        })
    });
    match r {
        Ok(m) => Ok(m.clone()),
        Err((true, why)) => Err(Error::NoDevice { why: why.clone() }),
        Err((false, log)) => Err(Error::SimBuild { family: family.name.to_string(), log: log.clone() }),
    }
}

fn load(family: &'static Family, source: &str) -> Result<Module> {
    let cxx = compiler()?;
    let fail = |log: String| Error::SimBuild { family: family.name.to_string(), log };
    let rewritten = rewrite_shared(source).map_err(fail)?;
    let kernels = find_kernels(&preprocess(&cxx, &rewritten).map_err(fail)?);
    if kernels.is_empty() {
        return Err(fail("no `extern \"C\" __global__` kernel found".into()));
    }
    let tu = format!("{HEADER}\n{rewritten}\n{}", kernel_table(&kernels));
    let flags = flags().join(" ");
    let hash = fnv1a(&[tu.as_bytes(), flags.as_bytes(), cxx.version.as_bytes(), cxx.argv.join(" ").as_bytes()]);
    let dir = cache_dir().unwrap_or_else(|| std::env::temp_dir().join(format!("drpo-sim-{}", std::process::id())));
    let so = dir.join(format!("sim-{}-{hash:016x}.so", family.name));
    if !so.is_file() {
        compile(&cxx, &tu, &so).map_err(fail)?;
    }
    open(family.name, &so)
}


/// The family's text after the preprocessor, with `__global__` and `__launch_bounds__` kept as
/// words (the header is not included: the .cu files include nothing, so their macros are all here).
fn preprocess(cxx: &Compiler, source: &str) -> std::result::Result<String, String> {
    let mut child = Command::new(&cxx.argv[0])
        .args(&cxx.argv[1..])
        .args(["-E", "-P", "-x", "c++", "-std=c++17", "-DDRPO_SIM=1", "-DDRPO_SIM_SCAN=1", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cxx.argv[0]))?;
    let mut stdin = child.stdin.take().expect("piped");
    let text = source.to_string();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, text.as_bytes()));
    let out = child.wait_with_output().map_err(|e| format!("{} -E: {e}", cxx.argv[0]))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!("the preprocessor failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Compiles the translation unit `tu` into the shared object `so` (written to a temp file beside it,
/// then renamed: a concurrent compile of the same family by another process is harmless).
fn compile(cxx: &Compiler, tu: &str, so: &Path) -> std::result::Result<(), String> {
    let tmp = crate::error::temp_sibling(so).map_err(|e| e.to_string())?;
    let src = tmp.with_extension("cpp");
    std::fs::write(&src, tu).map_err(|e| format!("{}: {e}", src.display()))?;
    let out = Command::new(&cxx.argv[0])
        .args(&cxx.argv[1..])
        .args(flags())
        .arg("-x")
        .arg("c++")
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cxx.argv[0]));
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&src);
            return Err(e);
        }
    };
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        // keep the translation unit: its #line directives point into cuda/, the rest is the header
        return Err(format!(
            "{} failed (translation unit kept at {}):\n{}",
            cxx.version,
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let _ = std::fs::remove_file(&src);
    crate::error::publish(&tmp, so).map_err(|e| e.to_string())
}

fn open(family: &'static str, so: &Path) -> Result<Module> {
    let fail = |what: String| Error::SimBuild { family: family.to_string(), log: format!("{}: {what}", so.display()) };
    let cpath = CString::new(so.as_os_str().as_encoded_bytes()).map_err(|_| fail("path with a NUL byte".into()))?;
    // SAFETY: dlopen of a shared object this module compiled from cuda_sim.h (its constructors only
    // fill the kernel table); the handle is never closed, so every pointer below stays valid.
    unsafe {
        let h = libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            let e = libc::dlerror();
            let why = if e.is_null() { "dlopen failed".to_string() } else { CStr::from_ptr(e).to_string_lossy().into_owned() };
            return Err(fail(why));
        }
        let sym = |name: &CStr| -> Result<*mut c_void> {
            let p = libc::dlsym(h, name.as_ptr());
            if p.is_null() {
                Err(fail(format!("symbol {} missing", name.to_string_lossy())))
            } else {
                Ok(p)
            }
        };
        let abi = *(sym(c"drpo_sim_abi")? as *const u32);
        if abi != super::ABI {
            return Err(fail(format!("ABI {abi}, expected {}", super::ABI)));
        }
        let run: RunFn = std::mem::transmute(sym(c"drpo_sim_run")?);
        let fault: FaultFn = std::mem::transmute(sym(c"drpo_sim_fault")?);
        let count = *(sym(c"drpo_sim_kernel_count")? as *const u32) as usize;
        let table = sym(c"drpo_sim_kernels")? as *const KernelInfo;
        let text = |p: *const c_char| CStr::from_ptr(p).to_string_lossy().into_owned();
        let split = |s: String| if s.is_empty() { Vec::new() } else { s.split(',').map(str::to_string).collect::<Vec<_>>() };
        let mut kernels = HashMap::new();
        for i in 0..count {
            let k = &*table.add(i);
            kernels.insert(
                text(k.name),
                Kernel { info: k, max_threads: k.max_threads, signature: split(text(k.signature)), params: split(text(k.params)) },
            );
        }
        Ok(Module { run, fault, kernels })
    }
}

// ---------------------------------------------------------------------------------------------
// The source rewrite: `__shared__` declarations into references to the block's shared memory.

/// Rewrites every `__shared__` declaration (outside comments and strings) so that the simulator
/// lays it out per block (poisoned, with a red zone):
///
/// ```text
/// __shared__ __align__(16) bf16 As[2][BM * LDS];
///   -> using drpo_sh_t3 = bf16 [2][BM * LDS]; static char drpo_sh_k3;
///      drpo_sh_t3& As = ::drpo_sim::shared_var<drpo_sh_t3, 16>(&drpo_sh_k3, "As");
/// extern __shared__ __align__(16) unsigned char smem[];
///   -> unsigned char* const smem = static_cast<unsigned char*>(::drpo_sim::shared_dynamic(16, "smem"));
/// ```
/// The static `char` is the variable's identity (one per function and template instantiation); a
/// declaration spanning lines keeps its line count, so `#line` positions stay right. Declarations
/// at namespace scope are refused (none exist; they would need a different rewrite).
pub(crate) fn rewrite_shared(src: &str) -> std::result::Result<String, String> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 1024);
    let (mut i, mut depth, mut count, mut line) = (0usize, 0i64, 0usize, 1usize);
    let mut copied = 0usize; // src[copied..i] not yet in `out`
    while i < b.len() {
        match b[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    line += (b[i] == b'\n') as usize;
                    i += 1;
                }
                i += 2;
            }
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                i += 1;
            }
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let start = i;
                while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                if &src[start..i] != "__shared__" {
                    continue;
                }
                // the declaration: [extern] __shared__ ... ;
                let end = start + src[start..].find(';').ok_or_else(|| format!("line {line}: `__shared__` without `;`"))?;
                let before = src[copied..start].trim_end();
                let dynamic = before.ends_with("extern") && !before[..before.len() - 6].ends_with(|c: char| c == '_' || c.is_ascii_alphanumeric());
                let decl_start = if dynamic { copied + before.len() - 6 } else { start };
                if depth <= 0 {
                    return Err(format!("line {line}: `__shared__` at namespace scope: the simulator needs it inside a function"));
                }
                let body = &src[i..end];
                out.push_str(&src[copied..decl_start]);
                count += 1;
                out.push_str(&rewrite_declaration(body, dynamic, count).map_err(|e| format!("line {line}: {e}"))?);
                // keep the line count of the original declaration
                for _ in 0..src[decl_start..=end].matches('\n').count() {
                    out.push('\n');
                }
                line += src[decl_start..=end].matches('\n').count();
                i = end + 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&src[copied..]);
    Ok(out)
}

/// `body`: what follows `__shared__` up to the `;`, e.g. ` __align__(16) bf16 As[2][BM * LDS]`.
fn rewrite_declaration(body: &str, dynamic: bool, n: usize) -> std::result::Result<String, String> {
    let mut body = body.replace('\n', " ");
    let mut align = "0".to_string();
    while let Some(at) = body.find("__align__") {
        let open = at + body[at..].find('(').ok_or("`__align__` without `(`")?;
        let close = matching(&body, open).ok_or("unbalanced `__align__(`")?;
        align = body[open + 1..close].trim().to_string();
        body.replace_range(at..=close, " ");
    }
    let decls = split_top_level(&body);
    let first = decls[0].trim();
    let dims_at = first.find('[').unwrap_or(first.len());
    let head = first[..dims_at].trim_end();
    let name_at = head.rfind(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).map_or(0, |p| p + 1);
    let ty = head[..name_at].trim();
    if ty.is_empty() || name_at == head.len() {
        return Err(format!("cannot read the declaration `__shared__{body}`"));
    }
    let mut out = String::new();
    for (k, d) in decls.iter().enumerate() {
        let d = d.trim();
        let (name, dims) = if k == 0 {
            (&head[name_at..], &first[dims_at..])
        } else {
            let at = d.find('[').unwrap_or(d.len());
            (d[..at].trim(), &d[at..])
        };
        if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
            return Err(format!("unsupported declarator `{d}` in `__shared__{body}`"));
        }
        if dynamic {
            if dims.replace(' ', "") != "[]" {
                return Err(format!("`extern __shared__ {ty} {name}{dims}`: dynamic shared memory is declared `[]`"));
            }
            out.push_str(&format!("{ty}* const {name} = static_cast<{ty}*>(::drpo_sim::shared_dynamic({align}, \"{name}\")); "));
        } else {
            let id = format!("{n}_{k}");
            out.push_str(&format!(
                "using drpo_sh_t{id} = {ty} {dims}; static char drpo_sh_k{id}; \
                 drpo_sh_t{id}& {name} = ::drpo_sim::shared_var<drpo_sh_t{id}, {align}>(&drpo_sh_k{id}, \"{name}\"); "
            ));
        }
    }
    Ok(out)
}

/// The index of the bracket closing the one at `open` (`(`, `[` or `<`), if any.
fn matching(s: &str, open: usize) -> Option<usize> {
    let b = s.as_bytes();
    let (o, c) = match b[open] {
        b'(' => (b'(', b')'),
        b'[' => (b'[', b']'),
        _ => (b'<', b'>'),
    };
    let mut depth = 0;
    for (k, &x) in b.iter().enumerate().skip(open) {
        if x == o {
            depth += 1;
        } else if x == c {
            depth -= 1;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}

/// Splits at commas outside (), [], {} and <>.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut from) = (Vec::new(), 0i32, 0);
    for (k, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' | '<' => depth += 1,
            ')' | ']' | '}' | '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[from..k]);
                from = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[from..]);
    parts
}

// ---------------------------------------------------------------------------------------------
// The kernels of a family, from its preprocessed text.

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FoundKernel {
    pub name: String,
    /// the `__launch_bounds__` maximum as written (already macro-expanded), if any
    pub max_threads: Option<String>,
    pub params: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Str,
    Punct(char),
}

fn tokens(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'_' || c.is_ascii_alphabetic() {
            let st = i;
            while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            out.push((Tok::Ident(s[st..i].to_string()), s[st..i].to_string()));
        } else if c.is_ascii_digit() {
            let st = i;
            while i < b.len() && (b[i] == b'.' || b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            out.push((Tok::Punct('0'), s[st..i].to_string()));
        } else if c == b'"' || c == b'\'' {
            let st = i;
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push((Tok::Str, s[st..i.min(b.len())].to_string()));
        } else {
            out.push((Tok::Punct(c as char), (c as char).to_string()));
            i += 1;
        }
    }
    out
}

fn ident(t: &[(Tok, String)], k: usize, name: &str) -> bool {
    matches!(t.get(k), Some((Tok::Ident(s), _)) if s == name)
}

/// The index of the token closing the `(` at `open`.
fn close_paren(t: &[(Tok, String)], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (k, tok) in t.iter().enumerate().skip(open) {
        match tok.0 {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Every `extern "C" __global__` function: its name, launch bounds and parameter names.
pub(crate) fn find_kernels(pre: &str) -> Vec<FoundKernel> {
    let t = tokens(pre);
    let mut found: Vec<FoundKernel> = Vec::new();
    for g in 0..t.len() {
        if !ident(&t, g, "__global__") || g < 2 || !ident(&t, g - 2, "extern") || t[g - 1].1 != "\"C\"" {
            continue;
        }
        let (mut k, mut bounds) = (g + 1, None);
        let name_at = loop {
            match t.get(k) {
                None => break None,
                Some((Tok::Ident(s), _)) if (s == "__launch_bounds__" || s == "__attribute__") && t.get(k + 1).map(|x| &x.0) == Some(&Tok::Punct('(')) => {
                    let Some(close) = close_paren(&t, k + 1) else { break None };
                    if s == "__launch_bounds__" {
                        let inner = &t[k + 2..close];
                        let first: Vec<&str> = inner.iter().take_while(|x| x.0 != Tok::Punct(',')).map(|x| x.1.as_str()).collect();
                        bounds = Some(first.join(" "));
                    }
                    k = close + 1;
                }
                Some((Tok::Ident(_), _)) if t.get(k + 1).map(|x| &x.0) == Some(&Tok::Punct('(')) => break Some(k),
                Some(_) => k += 1,
            }
        };
        let Some(n) = name_at else { continue };
        let Some(close) = close_paren(&t, n + 1) else { continue };
        let mut params = Vec::new();
        let inner = &t[n + 2..close];
        let mut depth = 0;
        let mut cur: Vec<&(Tok, String)> = Vec::new();
        for tok in inner.iter().chain(std::iter::once(&(Tok::Punct(','), ",".to_string()))) {
            match tok.0 {
                Tok::Punct('(') | Tok::Punct('<') | Tok::Punct('[') => depth += 1,
                Tok::Punct(')') | Tok::Punct('>') | Tok::Punct(']') => depth -= 1,
                Tok::Punct(',') if depth == 0 => {
                    if !(cur.is_empty() || cur.len() == 1 && cur[0].1 == "void") {
                        let name = match cur.last() {
                            Some((Tok::Ident(s), _)) if cur.len() > 1 => s.clone(),
                            _ => format!("arg{}", params.len()),
                        };
                        params.push(name);
                    }
                    cur.clear();
                    continue;
                }
                _ => {}
            }
            cur.push(tok);
        }
        let name = t[n].1.clone();
        if !found.iter().any(|f| f.name == name) {
            found.push(FoundKernel { name, max_threads: bounds, params });
        }
    }
    found
}

/// The generated end of a translation unit: one call thunk per kernel and the table
/// `drpo_sim_kernels` (name, thunk, launch bounds, signature, parameter names).
fn kernel_table(kernels: &[FoundKernel]) -> String {
    let mut s = String::from("\n// ---- generated by src/gpu/sim/build.rs: the kernel table ----\nnamespace drpo_sim_gen {\n");
    for (i, k) in kernels.iter().enumerate() {
        s.push_str(&format!("static void call_{i}(void** a) {{ ::drpo_sim::invoke(&::{}, a); }}\n", k.name));
    }
    s.push_str("}  // namespace drpo_sim_gen\n");
    s.push_str("extern \"C\" __attribute__((visibility(\"default\"))) const ::drpo_sim::KernelInfo drpo_sim_kernels[] = {\n");
    for (i, k) in kernels.iter().enumerate() {
        let bounds = k.max_threads.as_deref().unwrap_or("0");
        s.push_str(&format!(
            "    {{\"{n}\", &drpo_sim_gen::call_{i}, (uint32_t)({bounds}), ::drpo_sim::signature_of(&::{n}), \"{p}\"}},\n",
            n = k.name,
            p = k.params.join(",")
        ));
    }
    s.push_str(&format!(
        "}};\nextern \"C\" __attribute__((visibility(\"default\"))) const unsigned drpo_sim_kernel_count = {};\n",
        kernels.len()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_declarations_become_block_references() {
        let src = "#line 1 \"k.cu\"\n// __shared__ float in_a_comment[3];\ntemplate <int N> __device__ void f() {\n    __shared__ __align__(16) unsigned short As[2][N * 40];\n    __shared__ float red_m[4][N], red_s[4][N];\n    extern __shared__ __align__(16) unsigned char smem[];\n    __shared__ double total;\n    const char* s = \"__shared__\";\n}\n";
        let out = rewrite_shared(src).unwrap();
        assert_eq!(out.lines().count(), src.lines().count(), "{out}");
        assert!(out.contains("// __shared__ float in_a_comment[3];"), "comments untouched");
        assert!(out.contains("using drpo_sh_t1_0 = unsigned short [2][N * 40];"), "{out}");
        assert!(out.contains("::drpo_sim::shared_var<drpo_sh_t1_0, 16>(&drpo_sh_k1_0, \"As\")"), "{out}");
        assert!(out.contains("drpo_sh_t2_0& red_m =") && out.contains("drpo_sh_t2_1& red_s ="), "{out}");
        assert!(out.contains("using drpo_sh_t2_1 = float [4][N];"), "{out}");
        assert!(out.contains("unsigned char* const smem = static_cast<unsigned char*>(::drpo_sim::shared_dynamic(16, \"smem\"));"), "{out}");
        assert!(out.contains("using drpo_sh_t4_0 = double ;") && out.contains("drpo_sh_t4_0& total"), "{out}");
        assert!(out.contains("\"__shared__\""), "strings untouched");
        assert!(!out.contains("extern"), "{out}");
    }

    #[test]
    fn multi_line_declarations_keep_their_lines() {
        let src = "void f() {\n  __shared__ float a[\n    32];\n  int x = __LINE__;\n}\n";
        let out = rewrite_shared(src).unwrap();
        assert_eq!(out.lines().count(), src.lines().count());
        assert_eq!(out.lines().nth(3).unwrap().trim(), "int x = __LINE__;");
    }

    #[test]
    fn namespace_scope_shared_memory_is_refused() {
        assert!(rewrite_shared("__shared__ float a[4];\n").unwrap_err().contains("namespace scope"));
    }

    #[test]
    fn kernels_are_found_with_bounds_and_parameter_names() {
        let pre = r#"template <typename T> __device__ void helper(T* x, int n);
extern "C" __global__ void __launch_bounds__(4 * 32) attention_prefill_f32( float* out, const float* q, int nh, float scale) { helper(out, nh); }
extern "C" __global__ void plain(unsigned long long len, const unsigned* ids) {}
extern "C" __global__ __launch_bounds__(256, 2) void second(void) {}
__global__ void not_extern_c(int x) {}
"#;
        let k = find_kernels(pre);
        assert_eq!(k.len(), 3, "{k:?}");
        assert_eq!(k[0], FoundKernel { name: "attention_prefill_f32".into(), max_threads: Some("4 * 32".into()), params: vec!["out".into(), "q".into(), "nh".into(), "scale".into()] });
        assert_eq!(k[1], FoundKernel { name: "plain".into(), max_threads: None, params: vec!["len".into(), "ids".into()] });
        assert_eq!(k[2], FoundKernel { name: "second".into(), max_threads: Some("256".into()), params: vec![] });
    }
}
