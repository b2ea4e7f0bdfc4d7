# frozen_string_literal: true

# tests/make-tls.rb: makes the TLS material check-rendered.sh serves HTTPS with, using Ruby's
# openssl library (no openssl binary needed): a CA (ca.crt) and a server certificate for
# 127.0.0.1 and localhost signed by it (tls.crt, tls.key; EC P-256, valid for two days).
#
# usage: ruby tests/make-tls.rb <dir>

require 'fileutils'
require 'openssl'

dir = ARGV.fetch(0) { abort('usage: make-tls.rb <dir>') }
FileUtils.mkdir_p(dir)

# A certificate for the subject's key, signed by the issuer's key, with the given extensions.
def certificate(subject, key, issuer, issuer_key, serial, extensions)
  cert = OpenSSL::X509::Certificate.new
  cert.version = 2
  cert.serial = serial
  cert.subject = OpenSSL::X509::Name.parse(subject)
  cert.issuer = issuer ? issuer.subject : cert.subject
  cert.public_key = key
  cert.not_before = Time.now - 60
  cert.not_after = Time.now + (2 * 24 * 3600)
  factory = OpenSSL::X509::ExtensionFactory.new
  factory.subject_certificate = cert
  factory.issuer_certificate = issuer || cert
  extensions.each { |name, value, critical| cert.add_extension(factory.create_extension(name, value, critical)) }
  cert.sign(issuer_key, OpenSSL::Digest.new('SHA256'))
  cert
end

ca_key = OpenSSL::PKey::EC.generate('prime256v1')
ca = certificate('/CN=bakery check-rendered CA', ca_key, nil, ca_key, 1,
                 [['basicConstraints', 'CA:TRUE', true], ['keyUsage', 'keyCertSign,cRLSign', true],
                  ['subjectKeyIdentifier', 'hash', false]])
server_key = OpenSSL::PKey::EC.generate('prime256v1')
server = certificate('/CN=127.0.0.1', server_key, ca, ca_key, 2,
                     [['basicConstraints', 'CA:FALSE', true], ['keyUsage', 'digitalSignature', true],
                      ['extendedKeyUsage', 'serverAuth', false],
                      ['subjectAltName', 'IP:127.0.0.1,DNS:localhost', false],
                      ['authorityKeyIdentifier', 'keyid:always', false]])

File.write(File.join(dir, 'ca.crt'), ca.to_pem)
File.write(File.join(dir, 'tls.crt'), server.to_pem)
File.write(File.join(dir, 'tls.key'), server_key.private_to_pem)
