/*
 * S3 XML bodies through libxml2 (see s3_xml.h). Parsing never touches the network,
 * never reports to stderr, and matches elements by local name, with or without
 * the S3 namespace.
 */
#include "s3_xml.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#define S3_XML_NAMESPACE "http://s3.amazonaws.com/doc/2006-03-01/"

void
s3_xml_init(void)
{
	xmlInitParser();
}

/* The document in body, or NULL if it is not well-formed XML. Free with xmlFreeDoc. */
static xmlDocPtr
s3_xml_read(const char *body, size_t len)
{
	if (body == NULL || len == 0 || len > INT_MAX)
		return NULL;
	return xmlReadMemory(body, (int) len, NULL, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

/* The root element if it is called name, else NULL. */
static xmlNodePtr
s3_xml_root(xmlDocPtr doc, const char *name)
{
	xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;

	if (root == NULL || xmlStrcmp(root->name, BAD_CAST name) != 0)
		return NULL;
	return root;
}

/* The first child element of parent called name, or NULL. */
static xmlNodePtr
s3_xml_child(xmlNodePtr parent, const char *name)
{
	for (xmlNodePtr n = parent->children; n != NULL; n = n->next)
		if (n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST name) == 0)
			return n;
	return NULL;
}

/* The text of parent's child called name, malloc'd; NULL if absent or out of memory. */
static char *
s3_xml_child_text(xmlNodePtr parent, const char *name)
{
	xmlNodePtr child = s3_xml_child(parent, name);
	xmlChar *content;
	char *text;

	if (child == NULL || (content = xmlNodeGetContent(child)) == NULL)
		return NULL;
	text = strdup((const char *) content);
	xmlFree(content);
	return text;
}

/*
 * Copies parent's child text called name into out (truncated), "" if absent, with
 * control characters as '?': the server's words end up in messages and logs.
 */
static void
s3_xml_child_copy(xmlNodePtr parent, const char *name, char *out, size_t size)
{
	char *text = s3_xml_child_text(parent, name);

	snprintf(out, size, "%s", text ? text : "");
	free(text);
	for (char *c = out; *c; c++)
		if ((unsigned char) *c < 0x20 || *c == 0x7f)
			*c = '?';
}

bool
s3_xml_parse_error(const char *body, size_t len, s3_xml_error *error)
{
	xmlDocPtr doc = s3_xml_read(body, len);
	xmlNodePtr root = s3_xml_root(doc, "Error");

	if (root != NULL)
	{
		s3_xml_child_copy(root, "Code", error->code, sizeof(error->code));
		s3_xml_child_copy(root, "Message", error->message, sizeof(error->message));
	}
	if (doc != NULL)
		xmlFreeDoc(doc);
	return root != NULL;
}

char *
s3_xml_parse_upload_id(const char *body, size_t len)
{
	xmlDocPtr doc = s3_xml_read(body, len);
	xmlNodePtr root = s3_xml_root(doc, "InitiateMultipartUploadResult");
	char *upload_id = root ? s3_xml_child_text(root, "UploadId") : NULL;

	if (doc != NULL)
		xmlFreeDoc(doc);
	if (upload_id != NULL && upload_id[0] == '\0')
	{
		free(upload_id);
		upload_id = NULL;
	}
	return upload_id;
}

/* S3's ISO 8601 time ("2009-10-12T17:50:30.000Z") in seconds since the epoch; 0 if unparsable. */
static int64_t
s3_xml_parse_time(const char *text)
{
	struct tm tm = {0};

	if (text == NULL || strptime(text, "%Y-%m-%dT%H:%M:%S", &tm) == NULL)
		return 0;
	return (int64_t) timegm(&tm);
}

/* One <Contents> entry to cb: 0 to go on, 1 if cb stopped, -1 if malformed. */
static int
s3_xml_list_entry(xmlNodePtr contents, storage_list_cb cb, void *arg)
{
	char *key = s3_xml_child_text(contents, "Key");
	char *size = s3_xml_child_text(contents, "Size");
	char *mtime = s3_xml_child_text(contents, "LastModified");
	storage_info info = {0};
	char *end = NULL;
	int rc = -1;

	if (key != NULL && size != NULL)
	{
		info.size = strtoull(size, &end, 10);
		info.mtime = s3_xml_parse_time(mtime);
		if (end != size && *end == '\0')
			rc = cb(key, &info, arg) != 0 ? 1 : 0;
	}
	free(key);
	free(size);
	free(mtime);
	return rc;
}

int
s3_xml_parse_list(const char *body, size_t len, storage_list_cb cb, void *arg, bool *truncated, char **next_token)
{
	xmlDocPtr doc = s3_xml_read(body, len);
	xmlNodePtr root = s3_xml_root(doc, "ListBucketResult");
	char *is_truncated = NULL;
	int rc = -1;

	*next_token = NULL;
	if (root != NULL)
	{
		rc = 0;
		for (xmlNodePtr n = root->children; rc == 0 && n != NULL; n = n->next)
			if (n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST "Contents") == 0)
				rc = s3_xml_list_entry(n, cb, arg);
	}
	if (rc == 0)
	{
		is_truncated = s3_xml_child_text(root, "IsTruncated");
		*truncated = is_truncated != NULL && strcmp(is_truncated, "true") == 0;
		if (*truncated && (*next_token = s3_xml_child_text(root, "NextContinuationToken")) == NULL)
			rc = -1;
		free(is_truncated);
	}
	if (doc != NULL)
		xmlFreeDoc(doc);
	return rc;
}

/* One <Upload> entry to cb: 0 to go on, 1 if cb stopped, -1 if malformed. */
static int
s3_xml_upload_entry(xmlNodePtr upload, storage_unfinished_cb cb, void *arg)
{
	char *key = s3_xml_child_text(upload, "Key");
	char *id = s3_xml_child_text(upload, "UploadId");
	char *initiated = s3_xml_child_text(upload, "Initiated");
	storage_info info = {.mtime = s3_xml_parse_time(initiated)};
	int rc = -1;

	if (key != NULL && key[0] != '\0' && id != NULL && id[0] != '\0')
		rc = cb(key, id, &info, arg) != 0 ? 1 : 0;
	free(key);
	free(id);
	free(initiated);
	return rc;
}

int
s3_xml_parse_uploads(const char *body, size_t len, storage_unfinished_cb cb, void *arg, bool *truncated,
					 char **next_key, char **next_upload)
{
	xmlDocPtr doc = s3_xml_read(body, len);
	xmlNodePtr root = s3_xml_root(doc, "ListMultipartUploadsResult");
	char *is_truncated = NULL;
	int rc = -1;

	*next_key = *next_upload = NULL;
	if (root != NULL)
	{
		rc = 0;
		for (xmlNodePtr n = root->children; rc == 0 && n != NULL; n = n->next)
			if (n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST "Upload") == 0)
				rc = s3_xml_upload_entry(n, cb, arg);
	}
	if (rc == 0)
	{
		is_truncated = s3_xml_child_text(root, "IsTruncated");
		*truncated = is_truncated != NULL && strcmp(is_truncated, "true") == 0;
		if (*truncated && ((*next_key = s3_xml_child_text(root, "NextKeyMarker")) == NULL ||
						   (*next_upload = s3_xml_child_text(root, "NextUploadIdMarker")) == NULL))
		{
			free(*next_key);
			*next_key = NULL;
			rc = -1;
		}
		free(is_truncated);
	}
	if (doc != NULL)
		xmlFreeDoc(doc);
	return rc;
}

int
s3_xml_parse_parts(const char *body, size_t len, storage_info *info, bool *truncated, char **next_marker)
{
	xmlDocPtr doc = s3_xml_read(body, len);
	xmlNodePtr root = s3_xml_root(doc, "ListPartsResult");
	char *is_truncated = NULL;
	int rc = root != NULL ? 0 : -1;

	*next_marker = NULL;
	for (xmlNodePtr n = root ? root->children : NULL; rc == 0 && n != NULL; n = n->next)
		if (n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST "Part") == 0)
		{
			char *size = s3_xml_child_text(n, "Size");
			char *mtime = s3_xml_child_text(n, "LastModified");
			char *end = NULL;
			uint64_t bytes = size ? strtoull(size, &end, 10) : 0;
			int64_t when = s3_xml_parse_time(mtime);

			if (size == NULL || end == size || *end != '\0')
				rc = -1;
			info->size += bytes;
			if (when > info->mtime)
				info->mtime = when;
			free(size);
			free(mtime);
		}
	if (rc == 0)
	{
		is_truncated = s3_xml_child_text(root, "IsTruncated");
		*truncated = is_truncated != NULL && strcmp(is_truncated, "true") == 0;
		if (*truncated && (*next_marker = s3_xml_child_text(root, "NextPartNumberMarker")) == NULL)
			rc = -1;
		free(is_truncated);
	}
	if (doc != NULL)
		xmlFreeDoc(doc);
	return rc;
}

/* The element reached from parent through the child names in path, or NULL. */
static xmlNodePtr
s3_xml_descend(xmlNodePtr parent, const char *const *path, size_t n)
{
	for (size_t i = 0; parent != NULL && i < n; i++)
		parent = s3_xml_child(parent, path[i]);
	return parent;
}

bool
s3_xml_parse_sts_credentials(const char *body, size_t len, s3_xml_sts_credentials *out, s3_xml_error *error)
{
	static const char *const credentials_path[] = {"AssumeRoleWithWebIdentityResult", "Credentials"};
	xmlDocPtr doc = s3_xml_read(body, len);
	xmlNodePtr creds = s3_xml_descend(s3_xml_root(doc, "AssumeRoleWithWebIdentityResponse"), credentials_path, 2);
	xmlNodePtr error_root = s3_xml_root(doc, "ErrorResponse");
	xmlNodePtr sts_error = error_root ? s3_xml_child(error_root, "Error") : NULL;
	bool ok = false;

	*out = (s3_xml_sts_credentials){0};
	error->code[0] = error->message[0] = '\0';
	if (creds != NULL)
	{
		out->access_key = s3_xml_child_text(creds, "AccessKeyId");
		out->secret_key = s3_xml_child_text(creds, "SecretAccessKey");
		out->session_token = s3_xml_child_text(creds, "SessionToken");
		out->expiration = s3_xml_child_text(creds, "Expiration");
		ok = out->access_key && out->access_key[0] && out->secret_key && out->secret_key[0] && out->session_token &&
			 out->session_token[0] && out->expiration && out->expiration[0];
	}
	else if (sts_error != NULL)
	{
		s3_xml_child_copy(sts_error, "Code", error->code, sizeof(error->code));
		s3_xml_child_copy(sts_error, "Message", error->message, sizeof(error->message));
	}
	if (!ok)
	{
		free(out->access_key);
		free(out->secret_key);
		free(out->session_token);
		free(out->expiration);
		*out = (s3_xml_sts_credentials){0};
	}
	if (doc != NULL)
		xmlFreeDoc(doc);
	return ok;
}

char *
s3_xml_complete_body(char *const *etags, int nparts, size_t *len)
{
	xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
	xmlNodePtr root = doc ? xmlNewNode(NULL, BAD_CAST "CompleteMultipartUpload") : NULL;
	xmlChar *mem = NULL;
	int size = 0;
	char *body = NULL;

	if (root == NULL)
		goto done;
	xmlDocSetRootElement(doc, root);
	if (xmlNewNs(root, BAD_CAST S3_XML_NAMESPACE, NULL) == NULL)
		goto done;
	for (int i = 0; i < nparts; i++)
	{
		xmlNodePtr part = xmlNewChild(root, NULL, BAD_CAST "Part", NULL);
		char number[16];

		snprintf(number, sizeof(number), "%d", i + 1);
		if (part == NULL || xmlNewTextChild(part, NULL, BAD_CAST "PartNumber", BAD_CAST number) == NULL ||
			xmlNewTextChild(part, NULL, BAD_CAST "ETag", BAD_CAST etags[i]) == NULL)
			goto done;
	}
	xmlDocDumpMemory(doc, &mem, &size);
	if (mem != NULL && (body = malloc((size_t) size + 1)) != NULL)
	{
		memcpy(body, mem, (size_t) size + 1);
		*len = (size_t) size;
	}

done:
	if (mem != NULL)
		xmlFree(mem);
	if (doc != NULL)
		xmlFreeDoc(doc);
	return body;
}
