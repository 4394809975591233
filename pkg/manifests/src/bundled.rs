//! The manifests mini ships (k3s' bundled addons): written into the manifests directory at
//! every start, overwriting local edits, unless `--disable NAME` names them, in which case a copy
//! left by an earlier start is removed (so the deployer removes its objects).

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use crate::files::ManifestFiles;

/// The IngressClass every agent's ingress proxy serves (`--disable ingress` idles them).
pub const INGRESS: &str = r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: mini, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: mini.dev/ingress}
"#;

/// The default StorageClass the local-path provisioner serves.
pub const LOCAL_STORAGE: &str = r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-path, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: mini.dev/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
allowVolumeExpansion: false
"#;

/// The bundled manifests: (name for `--disable`, file contents). The file is `NAME.yaml`.
pub const BUNDLED: &[(&str, &str)] = &[("ingress", INGRESS), ("local-storage", LOCAL_STORAGE)];

/// What start does with one bundled manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundledAction {
    /// Absent or different on disk: (re)written.
    Write,
    /// Already on disk as shipped.
    Keep,
    /// Disabled and present from an earlier start: removed.
    Remove,
    /// Disabled and absent.
    Skip,
}

/// The decision for one bundled manifest, from whether it is disabled and what is on disk.
pub fn plan(disabled: bool, shipped: &str, on_disk: Option<&[u8]>) -> BundledAction {
    match (disabled, on_disk) {
        (true, Some(_)) => BundledAction::Remove,
        (true, None) => BundledAction::Skip,
        (false, Some(bytes)) if bytes == shipped.as_bytes() => BundledAction::Keep,
        (false, _) => BundledAction::Write,
    }
}

/// Writes or removes the bundled manifests in `dir`; returns what it did per name.
pub fn sync(
    files: &dyn ManifestFiles,
    dir: &Path,
    disabled: &BTreeSet<String>,
) -> io::Result<Vec<(&'static str, BundledAction)>> {
    files.create_dir_all(dir)?;
    let mut done = Vec::new();
    for (name, contents) in BUNDLED {
        let path = dir.join(format!("{name}.yaml"));
        let on_disk = match files.read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let action = plan(disabled.contains(*name), contents, on_disk.as_deref());
        match action {
            BundledAction::Write => files.write(&path, contents.as_bytes())?,
            BundledAction::Remove => files.remove(&path)?,
            BundledAction::Keep | BundledAction::Skip => {}
        }
        done.push((*name, action));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents;
    use crate::files::fake::FakeFiles;

    #[test]
    fn bundled_manifests_parse_to_one_object_each() {
        for (name, contents) in BUNDLED {
            let parsed = documents::parse(&format!("{name}.yaml"), contents);
            assert!(parsed.errors.is_empty(), "{name}: {:?}", parsed.errors);
            assert_eq!(parsed.objects.len(), 1, "{name}");
        }
        let ingress = &documents::parse("ingress.yaml", INGRESS).objects[0].object;
        assert_eq!(ingress["spec"]["controller"], "mini.dev/ingress");
        let storage = &documents::parse("local-storage.yaml", LOCAL_STORAGE).objects[0].object;
        assert_eq!(storage["provisioner"], "mini.dev/local-path");
        assert_eq!(storage["allowVolumeExpansion"], false);
    }

    #[test]
    fn plan_covers_disabled_and_changed_files() {
        assert_eq!(plan(false, "a", None), BundledAction::Write);
        assert_eq!(plan(false, "a", Some(b"edited")), BundledAction::Write);
        assert_eq!(plan(false, "a", Some(b"a")), BundledAction::Keep);
        assert_eq!(plan(true, "a", Some(b"a")), BundledAction::Remove);
        assert_eq!(plan(true, "a", None), BundledAction::Skip);
    }

    #[test]
    fn sync_disabled_local_storage_removes_it_and_restores_edited_ingress() {
        let files = FakeFiles::with(&[
            ("/m/ingress.yaml", "edited by hand"),
            ("/m/local-storage.yaml", LOCAL_STORAGE),
        ]);
        let disabled = BTreeSet::from(["local-storage".to_string()]);
        let done = sync(&files, Path::new("/m"), &disabled).unwrap();
        assert_eq!(
            done,
            vec![
                ("ingress", BundledAction::Write),
                ("local-storage", BundledAction::Remove)
            ]
        );
        assert_eq!(files.get("/m/ingress.yaml").as_deref(), Some(INGRESS));
        assert_eq!(files.get("/m/local-storage.yaml"), None);
    }
}
