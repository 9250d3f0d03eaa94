#!/usr/bin/env python3
"""S3 side of the upload tests, with boto3 (from PyPI moto[server]) against a moto server
that the test started on 127.0.0.1 with INITIAL_NO_AUTH_ACTION_COUNT (so it checks credentials
and SigV4 signatures once set up).

    s3.py setup ENDPOINT BUCKET          -> {"key": ..., "secret": ...} (IAM user with s3:*)
    s3.py list ENDPOINT BUCKET KEY SECRET -> {"objects": {key: {"size", "sha256", "modified"}}}
"""
import hashlib
import json
import sys

import boto3

REGION = "us-east-1"


def client(service, endpoint, key="setup", secret="setup"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def setup(endpoint, bucket):
    iam = client("iam", endpoint)
    iam.create_user(UserName="robot")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="robot", PolicyName="s3", PolicyDocument=json.dumps(policy))
    k = iam.create_access_key(UserName="robot")["AccessKey"]
    s3 = client("s3", endpoint, k["AccessKeyId"], k["SecretAccessKey"])
    s3.create_bucket(Bucket=bucket)
    print(json.dumps({"key": k["AccessKeyId"], "secret": k["SecretAccessKey"]}))


def list_objects(endpoint, bucket, key, secret):
    s3 = client("s3", endpoint, key, secret)
    out = {}
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        out[o["Key"]] = {
            "size": o["Size"],
            "sha256": hashlib.sha256(body).hexdigest(),
            "modified": o["LastModified"].isoformat(),
        }
    print(json.dumps({"objects": out}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "setup":
        setup(*args)
    elif cmd == "list":
        list_objects(*args)
    else:
        sys.exit(f"unknown command {cmd}")
