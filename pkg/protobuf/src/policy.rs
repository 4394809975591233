//! Which zero-valued scalars the JSON form keeps.
//!
//! Go's protobuf marshaller always writes non-pointer scalar fields, so a zero on the
//! wire means either a non-pointer field left empty (dropped by `omitempty` in JSON) or
//! a pointer field explicitly set to zero (kept in JSON, e.g. `replicas: 0`). The wire
//! does not tell them apart, so:
//! - an empty string is dropped unless the field is required or listed in
//!   [`KEEP_EMPTY_STRING`] (pointer strings whose `""` means something);
//! - a zero number or `false` is kept unless the field is listed in [`OMIT_ZERO`] (the
//!   non-pointer `omitempty` numbers and booleans of the built-in API types).
//!
//! Names are `package.Message.jsonName`, compared case-insensitively.

/// Non-pointer `omitempty` integer and boolean fields.
pub const OMIT_ZERO: &[&str] = &[
    "apimachinery.pkg.apis.meta.v1.ObjectMeta.generation",
    "apimachinery.pkg.apis.meta.v1.Status.code",
    "apimachinery.pkg.apis.meta.v1.StatusDetails.retryAfterSeconds",
    "apimachinery.pkg.apis.meta.v1.Condition.observedGeneration",
    "apimachinery.pkg.apis.meta.v1.ListOptions.watch",
    "apimachinery.pkg.apis.meta.v1.ListOptions.allowWatchBookmarks",
    "apimachinery.pkg.apis.meta.v1.ListOptions.limit",
    "api.core.v1.Container.stdin",
    "api.core.v1.Container.stdinOnce",
    "api.core.v1.Container.tty",
    "api.core.v1.EphemeralContainerCommon.stdin",
    "api.core.v1.EphemeralContainerCommon.stdinOnce",
    "api.core.v1.EphemeralContainerCommon.tty",
    "api.core.v1.ContainerPort.hostPort",
    "api.core.v1.Probe.initialDelaySeconds",
    "api.core.v1.Probe.timeoutSeconds",
    "api.core.v1.Probe.periodSeconds",
    "api.core.v1.Probe.successThreshold",
    "api.core.v1.Probe.failureThreshold",
    "api.core.v1.PodSpec.hostNetwork",
    "api.core.v1.PodSpec.hostPID",
    "api.core.v1.PodSpec.hostIPC",
    "api.core.v1.VolumeMount.readOnly",
    "api.core.v1.ServiceSpec.publishNotReadyAddresses",
    "api.core.v1.ServiceSpec.healthCheckNodePort",
    "api.core.v1.ServicePort.nodePort",
    "api.core.v1.NodeSpec.unschedulable",
    "api.core.v1.ContainerStateTerminated.signal",
    "api.core.v1.Event.count",
    "api.core.v1.EventSeries.count",
    "api.core.v1.ReplicationControllerSpec.minReadySeconds",
    "api.core.v1.ReplicationControllerStatus.fullyLabeledReplicas",
    "api.core.v1.ReplicationControllerStatus.readyReplicas",
    "api.core.v1.ReplicationControllerStatus.availableReplicas",
    "api.core.v1.ReplicationControllerStatus.observedGeneration",
    "api.core.v1.AWSElasticBlockStoreVolumeSource.partition",
    "api.core.v1.GCEPersistentDiskVolumeSource.partition",
    "api.core.v1.ISCSIVolumeSource.chapAuthDiscovery",
    "api.core.v1.ISCSIVolumeSource.chapAuthSession",
    "api.core.v1.ISCSIPersistentVolumeSource.chapAuthDiscovery",
    "api.core.v1.ISCSIPersistentVolumeSource.chapAuthSession",
    "api.core.v1.ScaleIOVolumeSource.sslEnabled",
    "api.core.v1.ScaleIOPersistentVolumeSource.sslEnabled",
    "api.apps.v1.DeploymentSpec.minReadySeconds",
    "api.apps.v1.DeploymentSpec.paused",
    "api.apps.v1.DeploymentStatus.observedGeneration",
    "api.apps.v1.DeploymentStatus.replicas",
    "api.apps.v1.DeploymentStatus.updatedReplicas",
    "api.apps.v1.DeploymentStatus.readyReplicas",
    "api.apps.v1.DeploymentStatus.availableReplicas",
    "api.apps.v1.DeploymentStatus.unavailableReplicas",
    "api.apps.v1.StatefulSetSpec.minReadySeconds",
    "api.apps.v1.StatefulSetOrdinals.start",
    "api.apps.v1.StatefulSetStatus.observedGeneration",
    "api.apps.v1.StatefulSetStatus.readyReplicas",
    "api.apps.v1.StatefulSetStatus.currentReplicas",
    "api.apps.v1.StatefulSetStatus.updatedReplicas",
    "api.apps.v1.StatefulSetStatus.availableReplicas",
    "api.apps.v1.DaemonSetSpec.minReadySeconds",
    "api.apps.v1.DaemonSetStatus.observedGeneration",
    "api.apps.v1.DaemonSetStatus.updatedNumberScheduled",
    "api.apps.v1.DaemonSetStatus.numberAvailable",
    "api.apps.v1.DaemonSetStatus.numberUnavailable",
    "api.apps.v1.ReplicaSetSpec.minReadySeconds",
    "api.apps.v1.ReplicaSetStatus.fullyLabeledReplicas",
    "api.apps.v1.ReplicaSetStatus.readyReplicas",
    "api.apps.v1.ReplicaSetStatus.availableReplicas",
    "api.apps.v1.ReplicaSetStatus.observedGeneration",
    "api.batch.v1.JobStatus.active",
    "api.batch.v1.JobStatus.succeeded",
    "api.batch.v1.JobStatus.failed",
    "api.autoscaling.v2.HorizontalPodAutoscalerStatus.currentReplicas",
    "api.policy.v1.PodDisruptionBudgetStatus.observedGeneration",
    "api.scheduling.v1.PriorityClass.globalDefault",
    "api.networking.v1.ServiceBackendPort.number",
    "api.authentication.v1.TokenReviewStatus.authenticated",
    "api.authorization.v1.SubjectAccessReviewStatus.denied",
    "api.events.v1.Event.deprecatedCount",
];

/// Pointer string fields whose empty value is meaningful.
pub const KEEP_EMPTY_STRING: &[&str] = &["api.core.v1.PersistentVolumeClaimSpec.storageClassName"];

fn listed(list: &[&str], message: &str, json: &str) -> bool {
    list.iter().any(|entry| {
        entry
            .rsplit_once('.')
            .is_some_and(|(m, f)| f == json && m.eq_ignore_ascii_case(message))
    })
}

/// Whether a zero number or `false` in `message.json` is dropped from the JSON form.
pub fn omit_zero(message: &str, json: &str) -> bool {
    // The `readOnly` of volume sources is a non-pointer omitempty bool, except in the
    // Azure disk and CSI sources.
    if json == "readOnly"
        && message.starts_with("api.core.v1.")
        && message.ends_with("VolumeSource")
        && !message.eq_ignore_ascii_case("api.core.v1.AzureDiskVolumeSource")
        && !message.eq_ignore_ascii_case("api.core.v1.CSIVolumeSource")
    {
        return true;
    }
    listed(OMIT_ZERO, message, json)
}

/// Whether an empty string in `message.json` is kept in the JSON form.
pub fn keep_empty_string(message: &str, json: &str) -> bool {
    listed(KEEP_EMPTY_STRING, message, json)
}
