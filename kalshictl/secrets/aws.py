"""AWS Secrets Manager access (boto3); the endpoint may be overridden for S3/SM-compatible servers."""

from __future__ import annotations

import os

from kalshictl.errors import SecretError


class AwsSecretStore:
    """Read and write secrets in AWS Secrets Manager, keeping previous versions (AWSPREVIOUS) for rollback."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None) -> None:
        import boto3

        self.client = boto3.client(
            "secretsmanager",
            endpoint_url=endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_SECRETS_MANAGER")
            or os.environ.get("AWS_ENDPOINT_URL"),
            region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    def get(self, secret_id: str, version_id: str | None = None, stage: str | None = None) -> str:
        """Return a secret string (current version unless a version id or stage is given)."""
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict = {"SecretId": secret_id}
        if version_id:
            kwargs["VersionId"] = version_id
        if stage:
            kwargs["VersionStage"] = stage
        try:
            return self.client.get_secret_value(**kwargs)["SecretString"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise SecretError(f"secret aws-sm:{secret_id}: {code}") from None
        except BotoCoreError as exc:
            raise SecretError(f"secret aws-sm:{secret_id}: {type(exc).__name__}") from None
