//! What `docker run` means against ferry, which has no images: a detached run
//! (`docker run -d [--rm] … IMAGE CMD…`) makes a sandbox and runs CMD in it from the
//! host's filesystem, the image named only in a warning; an attached run streams the
//! process's output (`attach`). What needs an image or a terminal is refused at
//! create, before anything exists: an interactive run (`-i`, `-t`: ferryd gives the
//! process no terminal and no input) and a run without a command (an image's
//! default command is unknown to ferry), and what ferry would otherwise drop without a
//! word: environment variables, volumes and mounts, a working directory, a user.

use crate::docker::container::ContainerCreateRequest;
use crate::CoreError;

/// What a create asks for that ferry does not do, named by docker's flags.
fn dropped(req: &ContainerCreateRequest) -> Option<&'static str> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let hc = req.host_config.as_ref();
    if req.env.as_ref().is_some_and(|e| !e.is_empty()) {
        Some("environment variables (-e, --env) are")
    } else if req.volumes.as_ref().is_some_and(|v| !v.is_empty())
        || hc.is_some_and(|h| {
            h.binds.as_ref().is_some_and(|b| !b.is_empty())
                || h.mounts.as_ref().is_some_and(|m| !m.is_empty())
        })
    {
        Some("volumes and mounts (-v, --mount) are")
    } else if set(&req.working_dir) {
        Some("a working directory (-w) is")
    } else if set(&req.user) {
        Some("a user (-u) is")
    } else {
        None
    }
}

/// Check a create request; the warnings the create answer carries.
pub fn check(req: &ContainerCreateRequest) -> Result<Vec<String>, CoreError> {
    if req.attach_stdin || req.tty || req.open_stdin {
        return Err(CoreError::Invalid(
            "ferry gives a sandbox's process no terminal and no input (-i, -t): \
             run it without them, or in the foreground with `ferry run -- CMD`"
                .into(),
        ));
    }
    if let Some(what) = dropped(req) {
        return Err(CoreError::Invalid(format!(
            "{what} not supported by ferry: a sandbox's process runs from the host's \
             filesystem with ferryd's environment, as root, in /"
        )));
    }
    let no_cmd = req.cmd.as_ref().is_none_or(Vec::is_empty)
        && req.entrypoint.as_ref().is_none_or(Vec::is_empty);
    let image = req.image.as_deref().unwrap_or("");
    if no_cmd {
        return Err(CoreError::Invalid(format!(
            "ferry runs no images, so {} has no command to run: give one \
             (docker run -d IMAGE CMD…, or `ferry run -- CMD`)",
            if image.is_empty() {
                "the sandbox".to_string()
            } else {
                format!("image {image:?}")
            }
        )));
    }
    Ok(if image.is_empty() {
        vec![]
    } else {
        vec![format!(
            "ferry runs no images: {image:?} is ignored and the command runs from the host's filesystem inside the sandbox"
        )]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ContainerCreateRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_detached_run_with_a_command_is_taken_and_the_image_named_in_a_warning() {
        let w = check(&req(r#"{"Image":"busybox","Cmd":["sleep","9"]}"#)).unwrap();
        assert!(w[0].contains("\"busybox\" is ignored"), "{w:?}");
        assert!(check(&req(r#"{"Image":"","Cmd":["sleep","9"]}"#))
            .unwrap()
            .is_empty());
        assert!(check(&req(r#"{"Image":"x","Entrypoint":["sh"],"Cmd":null}"#)).is_ok());
    }

    #[test]
    fn interactive_and_commandless_runs_are_refused() {
        let e = check(&req(r#"{"Cmd":["sh"],"Tty":true,"OpenStdin":true}"#)).unwrap_err();
        assert!(e.to_string().contains("-i, -t"), "{e}");
        assert!(check(&req(r#"{"Cmd":["echo"],"AttachStdout":true}"#)).is_ok());
        for (body, what) in [
            (r#"{"Cmd":["sh"],"Env":["A=1"]}"#, "--env"),
            (r#"{"Cmd":["sh"],"HostConfig":{"Binds":["/a:/b"]}}"#, "-v"),
            (r#"{"Cmd":["sh"],"Volumes":{"/data":{}}}"#, "-v"),
            (r#"{"Cmd":["sh"],"WorkingDir":"/tmp"}"#, "-w"),
            (r#"{"Cmd":["sh"],"User":"nobody"}"#, "-u"),
        ] {
            let e = check(&req(body)).unwrap_err().to_string();
            assert!(
                e.contains(what) && e.contains("not supported by ferry"),
                "{e}"
            );
        }
        assert!(check(&req(r#"{"Cmd":["sh"],"Env":[],"WorkingDir":"","User":""}"#)).is_ok());
        let e = check(&req(r#"{"Image":"nginx","Cmd":null}"#)).unwrap_err();
        assert!(
            e.to_string().contains("image \"nginx\" has no command"),
            "{e}"
        );
    }
}
