//! Lookups of pre-existing network: VPC and subnet ids by tags. Read-only, and read only when
//! something is created (the provider caches them).

use crate::model::{Desired, LookupType, Tags};
use crate::provider::aws::{AwsError, NetworkCache};
use aws_sdk_ec2::types::Filter;

pub(super) fn tag_filters(tags: &Tags) -> Vec<Filter> {
    tags.iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect()
}

/// Resolves every VPC and subnet Lookup (read-only).
pub async fn lookup_network(
    client: &aws_sdk_ec2::Client,
    desired: &Desired,
) -> Result<NetworkCache, AwsError> {
    let mut cache = NetworkCache::default();
    for (r, l) in desired.lookups().filter(|(_, l)| l.kind == LookupType::Vpc) {
        let resp = client
            .describe_vpcs()
            .set_filters(Some(tag_filters(&l.tags)))
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeVpcs", r.id.to_string(), e))?;
        if let Some(id) = resp.vpcs().iter().filter_map(|v| v.vpc_id()).min() {
            cache.vpcs.insert(r.id.name.clone(), id.to_string());
        }
    }
    for (r, l) in desired
        .lookups()
        .filter(|(_, l)| l.kind == LookupType::Subnet)
    {
        let mut filters = tag_filters(&l.tags);
        if let Some(vpc) = l.vpc.as_ref().and_then(|v| cache.vpcs.get(v)) {
            filters.push(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let resp = client
            .describe_subnets()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeSubnets", r.id.to_string(), e))?;
        let mut ids: Vec<String> = resp
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .collect();
        ids.sort();
        cache.subnets.insert(r.id.name.clone(), ids);
    }
    Ok(cache)
}
