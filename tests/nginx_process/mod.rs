//! One nginx process for a test: in the foreground, as the current user, every file it writes
//! (pid, logs, temp directories, configuration) inside one test directory. Shared by the
//! collector's and the blocker's nginx tests, which differ only in their `http` directives.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Debian's nginx (scripts/test.sh installs nginx-light), else one on PATH; never skipped.
pub fn nginx_binary() -> PathBuf {
    let installed = Path::new("/usr/sbin/nginx");
    if installed.is_file() {
        return installed.to_owned();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("nginx not found: run scripts/test.sh, which installs Debian's nginx-light")
        })
}

/// A whole configuration: one worker in the foreground, with `http_directives` inside the
/// `http` block after the temp paths, which all point into `dir` (the defaults are under
/// /var/lib/nginx, not writable by a test).
pub fn config(dir: &Path, http_directives: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 64;
}}
http {{
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
{http_directives}
}}
"#
    )
}

/// Writes `config` to `dir`/nginx.conf and starts nginx on it, its output in `dir`/nginx.out.
pub fn spawn(dir: &Path, config: &str) -> Child {
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).unwrap();
    let output = std::fs::File::create(dir.join("nginx.out")).unwrap();
    let errors = output.try_clone().unwrap();
    Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&config_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(output))
        .stderr(Stdio::from(errors))
        .spawn()
        .expect("start nginx")
}

/// nginx's output, its error log and the named files of `dir`, for a failure message.
pub fn diagnostics(dir: &Path, files: &[&str]) -> String {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let mut text = format!(
        "nginx output:\n{}\nerror.log:\n{}",
        read("nginx.out"),
        read("error.log")
    );
    for file in files {
        text.push_str(&format!("\n{file}:\n{}", read(file)));
    }
    text
}
