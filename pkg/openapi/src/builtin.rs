//! The table of built-in kinds: (group, version, kind) → the k8s-openapi type whose
//! `schemars::JsonSchema` implementation provides the kind's schema.

use std::borrow::Cow;

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions_v1;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration_v1;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// One built-in kind and the hooks into its k8s-openapi type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BuiltinKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The upstream schema name (`io.k8s.api.apps.v1.Deployment`).
    pub schema_name: fn() -> Cow<'static, str>,
    /// Registers the kind's schema (and everything it references) in the generator.
    pub register: fn(&mut SchemaGenerator) -> Schema,
}

macro_rules! builtin_kinds {
    ($( ($group:literal, $version:literal, $kind:literal) => $ty:ty ),* $(,)?) => {
        /// Every built-in kind that has a schema.
        pub(crate) const BUILTIN_KINDS: &[BuiltinKind] = &[
            $(
                BuiltinKind {
                    group: $group,
                    version: $version,
                    kind: $kind,
                    schema_name: <$ty as JsonSchema>::schema_name,
                    register: SchemaGenerator::subschema_for::<$ty>,
                },
            )*
        ];
    };
}

builtin_kinds! {
    // core/v1
    ("", "v1", "Namespace") => api::core::v1::Namespace,
    ("", "v1", "Pod") => api::core::v1::Pod,
    ("", "v1", "Service") => api::core::v1::Service,
    ("", "v1", "Endpoints") => api::core::v1::Endpoints,
    ("", "v1", "ConfigMap") => api::core::v1::ConfigMap,
    ("", "v1", "Secret") => api::core::v1::Secret,
    ("", "v1", "ServiceAccount") => api::core::v1::ServiceAccount,
    ("", "v1", "Node") => api::core::v1::Node,
    ("", "v1", "Event") => api::core::v1::Event,
    ("", "v1", "PersistentVolume") => api::core::v1::PersistentVolume,
    ("", "v1", "PersistentVolumeClaim") => api::core::v1::PersistentVolumeClaim,
    ("", "v1", "ResourceQuota") => api::core::v1::ResourceQuota,
    ("", "v1", "LimitRange") => api::core::v1::LimitRange,
    ("", "v1", "ReplicationController") => api::core::v1::ReplicationController,
    ("", "v1", "PodTemplate") => api::core::v1::PodTemplate,
    ("", "v1", "Binding") => api::core::v1::Binding,
    ("", "v1", "ComponentStatus") => api::core::v1::ComponentStatus,
    // apps/v1
    ("apps", "v1", "Deployment") => api::apps::v1::Deployment,
    ("apps", "v1", "ReplicaSet") => api::apps::v1::ReplicaSet,
    ("apps", "v1", "StatefulSet") => api::apps::v1::StatefulSet,
    ("apps", "v1", "DaemonSet") => api::apps::v1::DaemonSet,
    ("apps", "v1", "ControllerRevision") => api::apps::v1::ControllerRevision,
    // batch/v1
    ("batch", "v1", "Job") => api::batch::v1::Job,
    ("batch", "v1", "CronJob") => api::batch::v1::CronJob,
    // autoscaling
    ("autoscaling", "v2", "HorizontalPodAutoscaler") => api::autoscaling::v2::HorizontalPodAutoscaler,
    ("autoscaling", "v1", "HorizontalPodAutoscaler") => api::autoscaling::v1::HorizontalPodAutoscaler,
    ("autoscaling", "v1", "Scale") => api::autoscaling::v1::Scale,
    // policy/v1
    ("policy", "v1", "PodDisruptionBudget") => api::policy::v1::PodDisruptionBudget,
    ("policy", "v1", "Eviction") => api::policy::v1::Eviction,
    // coordination.k8s.io/v1
    ("coordination.k8s.io", "v1", "Lease") => api::coordination::v1::Lease,
    // discovery.k8s.io/v1
    ("discovery.k8s.io", "v1", "EndpointSlice") => api::discovery::v1::EndpointSlice,
    // networking.k8s.io/v1
    ("networking.k8s.io", "v1", "Ingress") => api::networking::v1::Ingress,
    ("networking.k8s.io", "v1", "IngressClass") => api::networking::v1::IngressClass,
    ("networking.k8s.io", "v1", "NetworkPolicy") => api::networking::v1::NetworkPolicy,
    ("networking.k8s.io", "v1", "IPAddress") => api::networking::v1::IPAddress,
    ("networking.k8s.io", "v1", "ServiceCIDR") => api::networking::v1::ServiceCIDR,
    // rbac.authorization.k8s.io/v1
    ("rbac.authorization.k8s.io", "v1", "Role") => api::rbac::v1::Role,
    ("rbac.authorization.k8s.io", "v1", "RoleBinding") => api::rbac::v1::RoleBinding,
    ("rbac.authorization.k8s.io", "v1", "ClusterRole") => api::rbac::v1::ClusterRole,
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => api::rbac::v1::ClusterRoleBinding,
    // storage.k8s.io/v1
    ("storage.k8s.io", "v1", "StorageClass") => api::storage::v1::StorageClass,
    ("storage.k8s.io", "v1", "CSIDriver") => api::storage::v1::CSIDriver,
    ("storage.k8s.io", "v1", "CSINode") => api::storage::v1::CSINode,
    ("storage.k8s.io", "v1", "CSIStorageCapacity") => api::storage::v1::CSIStorageCapacity,
    ("storage.k8s.io", "v1", "VolumeAttachment") => api::storage::v1::VolumeAttachment,
    // events.k8s.io/v1
    ("events.k8s.io", "v1", "Event") => api::events::v1::Event,
    // certificates.k8s.io/v1
    ("certificates.k8s.io", "v1", "CertificateSigningRequest") => api::certificates::v1::CertificateSigningRequest,
    // apiextensions.k8s.io/v1
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => apiextensions_v1::CustomResourceDefinition,
    // apiregistration.k8s.io/v1
    ("apiregistration.k8s.io", "v1", "APIService") => apiregistration_v1::APIService,
    // authorization.k8s.io/v1
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => api::authorization::v1::SelfSubjectAccessReview,
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview") => api::authorization::v1::SelfSubjectRulesReview,
    ("authorization.k8s.io", "v1", "SubjectAccessReview") => api::authorization::v1::SubjectAccessReview,
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview") => api::authorization::v1::LocalSubjectAccessReview,
    // authentication.k8s.io/v1
    ("authentication.k8s.io", "v1", "TokenRequest") => api::authentication::v1::TokenRequest,
    ("authentication.k8s.io", "v1", "TokenReview") => api::authentication::v1::TokenReview,
    ("authentication.k8s.io", "v1", "SelfSubjectReview") => api::authentication::v1::SelfSubjectReview,
    // admissionregistration.k8s.io/v1
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration") => api::admissionregistration::v1::MutatingWebhookConfiguration,
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration") => api::admissionregistration::v1::ValidatingWebhookConfiguration,
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy") => api::admissionregistration::v1::ValidatingAdmissionPolicy,
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding") => api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    // scheduling.k8s.io/v1, node.k8s.io/v1
    ("scheduling.k8s.io", "v1", "PriorityClass") => api::scheduling::v1::PriorityClass,
    ("node.k8s.io", "v1", "RuntimeClass") => api::node::v1::RuntimeClass,
    // flowcontrol.apiserver.k8s.io/v1
    ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema") => api::flowcontrol::v1::FlowSchema,
    ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration") => api::flowcontrol::v1::PriorityLevelConfiguration,
}

/// The built-in kind for a (group, version, kind), if there is one.
pub(crate) fn lookup(group: &str, version: &str, kind: &str) -> Option<&'static BuiltinKind> {
    BUILTIN_KINDS
        .iter()
        .find(|b| b.group == group && b.version == version && b.kind == kind)
}

/// Kinds served only through `create` (reviews, bindings): their collection has a POST and
/// nothing else, and there is no item path.
pub(crate) fn is_create_only(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Binding")
            | ("authorization.k8s.io", "SelfSubjectAccessReview")
            | ("authorization.k8s.io", "SelfSubjectRulesReview")
            | ("authorization.k8s.io", "SubjectAccessReview")
            | ("authorization.k8s.io", "LocalSubjectAccessReview")
            | ("authentication.k8s.io", "TokenReview")
            | ("authentication.k8s.io", "SelfSubjectReview")
    )
}
