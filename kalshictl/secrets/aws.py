"""AWS Secrets Manager access (boto3); the endpoint may be overridden for S3/SM-compatible servers."""

from __future__ import annotations

import os

from kalshictl.errors import SecretError, import_extra

CURRENT, PREVIOUS, PENDING = "AWSCURRENT", "AWSPREVIOUS", "AWSPENDING"


class AwsSecretStore:
    """Read and write secrets in AWS Secrets Manager, keeping previous versions (AWSPREVIOUS) for rollback."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None) -> None:
        boto3 = import_extra("boto3", "aws")

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
        # Name AWSCURRENT explicitly: same meaning on AWS, and correct on servers that track it lazily (moto).
        stage = stage or (None if version_id else CURRENT)
        if stage:
            kwargs["VersionStage"] = stage
        try:
            value = self.client.get_secret_value(**kwargs)["SecretString"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise SecretError(f"secret aws-sm:{secret_id}: {code}") from None
        except BotoCoreError as exc:
            raise SecretError(f"secret aws-sm:{secret_id}: {type(exc).__name__}") from None
        from kalshictl.logs import register_secret

        register_secret(value)
        return value

    def _call(self, secret_id: str, method: str, **kwargs: object) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(SecretId=secret_id, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise SecretError(f"secret aws-sm:{secret_id}: {method}: {code}") from None
        except BotoCoreError as exc:
            raise SecretError(f"secret aws-sm:{secret_id}: {method}: {type(exc).__name__}") from None

    def stages(self, secret_id: str) -> dict[str, list[str]]:
        """Version id -> staging labels (never values)."""
        return dict(self._call(secret_id, "describe_secret").get("VersionIdsToStages", {}))

    def version_with(self, secret_id: str, stage: str) -> str | None:
        """The version id carrying a staging label, if any."""
        for version_id, labels in self.stages(secret_id).items():
            if stage in labels:
                return version_id
        return None

    def put_pending(self, secret_id: str, value: str) -> str:
        """Store a new version labelled AWSPENDING only (readers still get AWSCURRENT); return its version id."""
        import uuid

        out = self._call(
            secret_id,
            "put_secret_value",
            SecretString=value,
            VersionStages=[PENDING],
            ClientRequestToken=str(uuid.uuid4()),
        )
        return out["VersionId"]

    def make_current(self, secret_id: str, version_id: str) -> str | None:
        """Move AWSCURRENT to a version (AWS moves AWSPREVIOUS to the old one); return the old current id."""
        old = self.version_with(secret_id, CURRENT)
        if old == version_id:
            return old
        kwargs: dict = {"VersionStage": CURRENT, "MoveToVersionId": version_id}
        if old:
            kwargs["RemoveFromVersionId"] = old
        self._call(secret_id, "update_secret_version_stage", **kwargs)
        return old

    def clear_pending(self, secret_id: str) -> None:
        """Remove the AWSPENDING label (after promotion or an aborted rotation)."""
        pending = self.version_with(secret_id, PENDING)
        if pending:
            self._call(secret_id, "update_secret_version_stage", VersionStage=PENDING, RemoveFromVersionId=pending)
