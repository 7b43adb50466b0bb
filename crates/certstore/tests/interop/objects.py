"""Reads and writes the objects of an S3 bucket or the blobs of an Azure container with the
service's own Python SDK (boto3, azure-storage-blob), for certstore's interoperability tests.

    python objects.py s3|azure CONTAINER PREFIX < COMMAND

The command is JSON, read from standard input:

    {"put": [["<key>", "<hex of the value>"], ...]}  write each value under PREFIX/<key>, in order
    {"dump": true}                                    print {"<key>": "<hex>", ...}: every object
                                                      below PREFIX/, names relative to it
    {"clear": true}                                   delete every object below PREFIX/

The container (bucket) is created when missing. S3 reads its endpoint from
CERTSTORE_INTEROP_S3_ENDPOINT and its credentials from the usual AWS_* variables; Azure reads
AZURE_STORAGE_CONNECTION_STRING.
"""

import json
import os
import sys


class S3:
    def __init__(self, bucket):
        import boto3
        import botocore.exceptions

        self.client = boto3.client(
            "s3",
            endpoint_url=os.environ["CERTSTORE_INTEROP_S3_ENDPOINT"],
            region_name="us-east-1",
        )
        self.bucket = bucket
        try:
            self.client.create_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put(self, name, value):
        self.client.put_object(Bucket=self.bucket, Key=name, Body=value)

    def names(self, prefix):
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"]

    def get(self, name):
        return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()

    def delete(self, name):
        self.client.delete_object(Bucket=self.bucket, Key=name)


class Azure:
    def __init__(self, container):
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(
            os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        )
        self.container = service.get_container_client(container)
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    def put(self, name, value):
        self.container.upload_blob(name, value, overwrite=True)

    def names(self, prefix):
        for blob in self.container.list_blobs(name_starts_with=prefix):
            yield blob.name

    def get(self, name):
        return self.container.download_blob(name).readall()

    def delete(self, name):
        # A lock blob may still carry a lease that runs out by itself: break it first.
        blob = self.container.get_blob_client(name)
        if blob.get_blob_properties().lease.state == "leased":
            from azure.storage.blob import BlobLeaseClient

            BlobLeaseClient(blob).break_lease(lease_break_period=0)
        blob.delete_blob()


def main():
    kind, container, prefix = sys.argv[1:4]
    store = {"s3": S3, "azure": Azure}[kind](container)
    below = prefix.rstrip("/") + "/" if prefix else ""
    command = json.load(sys.stdin)
    if "put" in command:
        for key, value in command["put"]:
            store.put(below + key, bytes.fromhex(value))
    if command.get("dump"):
        found = {}
        for name in store.names(below):
            found[name[len(below):]] = store.get(name).hex()
        json.dump(found, sys.stdout)
    if command.get("clear"):
        for name in list(store.names(below)):
            store.delete(name)


if __name__ == "__main__":
    main()
